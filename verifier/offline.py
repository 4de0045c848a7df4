"""``otakit-device update --from PATH``: install from an export (directory or tar) or mirror.

The install is ``update.update`` with the export as this run's repository
(``UpdateOptions.repo_url``): the same TUF refresh against the device's trusted metadata
(pinned root, rollback and expiry rules, time floor), the same plan and apply path, with
``UpdateOptions.from_medium``: the medium's metadata becomes trusted only once the install
verified, and an export older than the device's last refresh is installed against the
device's own unexpired metadata. What this module adds is said before and after it, never
instead of a check:

* before: the export's description (``otakit-export.json``, unsigned) names its product and
  hardware; one that is not for this device is refused at once with both named, where the
  plan alone could only say "nothing to do". Only a refusal is ever based on it.
* after: an expired export is said to be one ("the export expired at …"), since the
  operator's remedy is a new export, not a repository re-sign.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc

from verifier.device import Device
from verifier.errors import IncompatibleTargetError, MetadataError, NothingToDoError, OtakitError
from verifier.mirror import fetcher_for
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import OtaFetcher
from verifier.update import Progress, UpdateOptions, UpdateResult, update

log = logging.getLogger("otakit.offline")

MANIFEST = "otakit-export.json"
MAX_MANIFEST = 64 * 1024


def read_manifest(fetcher: OtaFetcher, url: str) -> dict[str, Any] | None:
    """The export's description, or None (a plain mirror has none; one that is not JSON is
    only logged: it decides nothing). An unreadable medium is its error, at once."""
    try:
        data = fetcher.download_bytes(url.rstrip("/") + "/" + MANIFEST, MAX_MANIFEST)
    except tuf_exc.DownloadHTTPError:
        return None
    except tuf_exc.DownloadError as e:  # the medium itself: the same error the install meets
        raise map_tuf_error(e, f"export description {MANIFEST}") from e
    try:
        doc = json.loads(data)
    except ValueError:
        log.warning("export description %s is not JSON; ignored", MANIFEST)
        return None
    return doc if isinstance(doc, dict) else None


def check_for_device(manifest: dict[str, Any], product: str, hardware: str, where: str) -> None:
    """Refuse an export made for another product or hardware (named in its description)."""
    theirs = manifest.get("product")
    if isinstance(theirs, str) and theirs != product:
        raise IncompatibleTargetError(
            f"{where} is an export for product {theirs!r}; this device is {product!r}",
            hint="bring the export made for this product",
        )
    hw = manifest.get("hardware")
    if isinstance(hw, list) and hw and "generic" not in hw and hardware not in hw:
        raise IncompatibleTargetError(
            f"{where} is an export for hardware {', '.join(map(str, hw))}; this device is "
            f"{hardware!r}",
            hint="bring the export made for this hardware",
        )


def update_from(
    dev: Device,
    repo_url: str,
    now: datetime,
    *,
    options: UpdateOptions | None = None,
    progress: Progress | None = None,
    rand: Callable[[], float] | None = None,
    fetcher: OtaFetcher | None = None,
) -> UpdateResult:
    """``update`` from the export or mirror at ``repo_url`` (``mirror.repo_url`` form)."""
    options = replace(
        options or UpdateOptions(), repo_url=repo_url, ignore_backoff=True, from_medium=True
    )
    fetcher = fetcher or fetcher_for(repo_url, options.limits.transfer)
    where = repo_url.removeprefix("file://")
    manifest = read_manifest(fetcher, repo_url)
    if manifest is not None:
        check_for_device(manifest, dev.config.product, dev.config.hardware, where)
    kw: dict[str, Any] = {} if rand is None else {"rand": rand}
    try:
        return update(dev, now, options=options, fetcher=fetcher, progress=progress, **kw)
    except NothingToDoError:
        raise
    except MetadataError as e:
        until = (manifest or {}).get("valid_until")
        if "expired" in e.message and isinstance(until, str):
            raise type(e)(
                f"the export expired at {until} (it was valid for "
                f"{manifest.get('valid_for_days') if manifest else '?'} days): {e.message}",
                hint="ask the publisher for a new export (otakit export); this one can no "
                "longer be installed",
            ) from e
        raise


def location(text: str) -> str:
    """``--from`` as given on the command line (a relative path is taken from the cwd)."""
    from verifier.mirror import repo_url

    return repo_url(str(Path(text).absolute()) if "://" not in text else text)


def inspect_export(text: str, root: bytes | None) -> dict[str, Any]:
    """What an export holds and whether it verifies now (``otakit inspect export``).

    The metadata is checked by the device's own client (``tuf.standalone.refresh``: root
    chain, signatures, versions, expiry at the current time) from ``root`` (the root a
    reviewer pins) or, without one, the export's own first root (said in the result: a
    self-rooted check shows consistency, not authenticity).
    """
    import tempfile

    from verifier.effects import RealDisk, write_atomic
    from verifier.tuf.standalone import refresh

    url = location(text)
    fetcher = fetcher_for(url, UpdateOptions().limits.transfer)
    manifest = read_manifest(fetcher, url)
    anchor = "pinned"
    if root is None:
        anchor = "the export's own metadata/1.root.json"
        from verifier.tuf.failures import tuf_errors

        with tuf_errors(f"export {text}"):
            root = fetcher.download_bytes(url + "/metadata/1.root.json", 512 * 1024)
    problem = None
    versions: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="otakit-inspect-") as tmp:
        mdir = Path(tmp)
        disk = RealDisk()
        write_atomic(disk, mdir / "root.json", root)
        try:
            trusted = refresh(mdir, url + "/metadata/", disk, fetcher=fetcher)
            versions = dict(trusted.versions)
        except OtakitError as e:
            problem = e.message
    doc: dict[str, Any] = {
        "export": text,
        "description": manifest,
        "product": (manifest or {}).get("product"),
        "version": (manifest or {}).get("version"),
        "valid_until": (manifest or {}).get("valid_until"),
        "valid_for_days": (manifest or {}).get("valid_for_days"),
        "trust_anchor": anchor,
        "verified": problem is None,
        "problem": problem,
        "metadata_versions": versions,
    }
    return doc
