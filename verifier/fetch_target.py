"""``otakit-device fetch``: any signed target (a container bundle, a configuration archive, a
peripheral's firmware) with the trust the OS image gets.

The refresh is ``update``'s (same ``TufClient``: pinned root, time floor, durable trusted
metadata, strict parsing, delegations searched by TUF itself); the download is bounded by the
signed length and hashed on the way (``download.VerifyingReader``) into a new temp file beside
``out``; only once length and every signed hash matched is it synced and renamed over ``out``.
A refused download leaves no ``out`` and no temp file: nothing unverified is ever at a path a
consumer reads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc

from verifier.device import Device
from verifier.download import VerifyingReader
from verifier.effects import temp_path
from verifier.errors import NoSuchTargetError, OtakitError, UsageError
from verifier.mirror import fetcher_for
from verifier.tuf.client import TufClient, TufLimits
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import OtaFetcher

log = logging.getLogger("otakit.fetch")


@dataclass(frozen=True)
class SignedTarget:
    """A target as signed: what the download was checked against."""

    path: str
    length: int
    hashes: tuple[tuple[str, str], ...]
    custom: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.path,
            "length": self.length,
            "hashes": dict(self.hashes),
            "custom": self.custom,
        }


@dataclass(frozen=True)
class FetchResult:
    target: SignedTarget
    out: Path

    def to_dict(self) -> dict[str, Any]:
        return {**self.target.to_dict(), "out": str(self.out)}

    def message(self) -> str:
        return (
            f"{self.target.path} ({self.target.length} bytes) matches its signed length and "
            f"hashes; written to {self.out}"
        )


def fetch_target(
    dev: Device,
    name: str,
    out: Path,
    now: datetime,
    *,
    limits: TufLimits | None = None,
    repo_url: str | None = None,
    fetcher: OtaFetcher | None = None,
) -> FetchResult:
    """Refresh, resolve ``name`` through the signed metadata, download it verified to ``out``.

    ``repo_url`` replaces the configured repository for this call (a mirror).
    """
    limits = limits or TufLimits()
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: expected a file in an existing directory")
    if out.is_dir():
        raise UsageError(f"--out {out}: a directory, expected a file name")
    config = dev.config if repo_url is None else replace(dev.config, repo_url=repo_url)
    fetcher = fetcher or fetcher_for(config.repo_url, limits.transfer)
    with TufClient(
        dev.paths,
        config.metadata_url,
        config.targets_url,
        dev.disk,
        now=now,
        fetcher=fetcher,
        limits=limits,
    ) as tuf:
        tf = tuf.refresh_target(name)
        if tf is None:
            raise NoSuchTargetError(
                f"target {name!r}: not signed by this repository (searched targets and its "
                "delegations)",
                hint="check the name; the publisher lists targets with 'otakit repo list'",
            )
        target = SignedTarget(
            tf.path,
            tf.length,
            tuple(sorted(tf.hashes.items())),
            tf.unrecognized_fields.get("custom"),
        )
        log.info("refresh: %s is signed (%d bytes)", name, tf.length)
        _download_to(dev, fetcher, tuf.target_url(target), target, out)
    log.info("fetch: %s verified and written to %s", name, out)
    return FetchResult(target, out)


def _download_to(
    dev: Device, fetcher: OtaFetcher, url: str, target: SignedTarget, out: Path
) -> None:
    tmp = temp_path(out, os.urandom(8))
    h = dev.disk.open_write(tmp, new=True)
    ok = False
    try:
        try:
            _, chunks = fetcher.fetch_from(url, 0)
        except (tuf_exc.DownloadError, OSError) as e:
            raise map_tuf_error(e, f"download of {target.path}") from e
        reader = VerifyingReader(chunks, target, None)
        offset = 0
        while block := reader.read(1 << 20):
            h.pwrite(block, offset)
            offset += len(block)
        reader.finish()  # length and every signed hash, before the file has its name
        h.fsync()
        ok = True
    finally:
        h.close()
        if not ok:
            try:
                dev.disk.unlink(tmp)
            except OtakitError as e:
                log.warning("cannot remove %s: %s", tmp, e.message)
    dev.disk.rename(tmp, out)
    dev.disk.fsync_dir(out.parent)
