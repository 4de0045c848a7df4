"""``otakit export``: a self-contained subset of a repository for sites without a network.

An export is the repository's own layout (``metadata/``, ``targets/``), so a device reads it
with the same client as a mirror (``verifier.mirror``): every root from 1 (the chain from any
pinned root), ``timestamp.json``, the snapshot it names, the published targets and the
product's delegated roles, and the product's full image for one version plus the deltas
from the listed bases. ``otakit-export.json`` describes it (unsigned, for people and
``otakit inspect``; a device decides nothing from it).

Versions (docs/FORMAT.md, "Export"): the export's snapshot and timestamp are signed anew,
valid for ``valid_for`` (bounded by ``MAX_VALID_FOR``) instead of a day. They must never
look like a rollback to a device that later goes online, so their versions are taken from
the repository's sequence in the same locked step: the export carries snapshot S+1 and
timestamp T+1; the repository publishes the same snapshot S+1 with a timestamp T+2 of the
normal short lifetime. Every timestamp the repository serves from then on is newer than the
export's, and the long-lived T+1 is never served online.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Snapshot, Timestamp  # type: ignore[attr-defined]

from repo.delegation import bin_prefix, role_filename
from repo.demo_warnings import warn_demo_keys
from repo.errors import RepositoryStateError, UsageError
from repo.keys import KeyConfig, PromptFn
from repo.layout import metadata_dir, metadata_filename
from repo.publish import PublishDisk, SignedRelease, publish, publisher_lock
from repo.repository import Expiries, check_now, load_role_signers, stage_chain
from repo.roles import ONLINE_ROLES
from repo.safety import check_root_current
from repo.signing import sign_chain, sign_metadata
from repo.state import load_state
from signer.release import PublishedArtifact, published_artifacts
from verifier.artifact import ImageVersion
from verifier.errors import ArtifactSchemaError, NoSuchVersionError

#: an export's snapshot/timestamp lifetime at most: a signed "this is current" that long is
#: what a stolen stick can replay to a device that has not seen anything newer
MAX_VALID_FOR = timedelta(days=90)
MIN_VALID_FOR = timedelta(days=1)
DEFAULT_VALID_FOR = timedelta(days=30)
MANIFEST = "otakit-export.json"
EXPORT_SCHEMA = 1
_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    product: str
    version: str
    bases: tuple[str, ...]
    files: tuple[str, ...]
    manifest: dict[str, Any]
    online_timestamp_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.manifest,
            "out": str(self.out),
            "online_timestamp_version": self.online_timestamp_version,
        }


def parse_duration(text: str) -> timedelta:
    """``--valid-for``: ``30d``, ``12h`` or a number of days."""
    units = {"d": 86400, "h": 3600}
    unit = text[-1:] if text[-1:] in units else "d"
    number = text[:-1] if text[-1:] in units else text
    try:
        value = float(number)
    except ValueError:
        raise UsageError(
            f"--valid-for: expected a duration like 30d or 12h, found {text!r}"
        ) from None
    if not value > 0 or value != value:
        raise UsageError(f"--valid-for: expected a positive duration, found {text!r}")
    return timedelta(seconds=value * units[unit])


def check_valid_for(valid_for: timedelta) -> None:
    if not MIN_VALID_FOR <= valid_for <= MAX_VALID_FOR:
        raise UsageError(
            f"--valid-for: expected between {MIN_VALID_FOR.days} and {MAX_VALID_FOR.days} days, "
            f"found {valid_for}",
            hint="an export is a signed 'current' state anyone holding the stick can replay "
            "for that long (docs/THREAT-MODEL.md)",
        )


def select_artifacts(
    published: list[PublishedArtifact],
    product: str,
    version: str | None,
    bases: tuple[str, ...],
) -> tuple[ImageVersion, list[PublishedArtifact]]:
    """The full image of ``version`` (default: the newest not withdrawn) and its deltas from
    ``bases``; a base without a published delta is an error, not a silent omission."""
    mine = [a for a in published if a.info.product == product and a.info.withdrawn is None]
    if not mine:
        raise NoSuchVersionError(f"{product}: no published, not withdrawn images to export")
    if version is None:
        want = max(a.info.version for a in mine)
    else:
        try:
            want = ImageVersion.parse(version)
        except ArtifactSchemaError as e:
            raise UsageError(f"--version: {e.message}") from e
    fulls = [a for a in mine if a.info.version == want and a.info.kind == "full"]
    if not fulls:
        raise NoSuchVersionError(f"{product} {want}: no published full image (or withdrawn)")
    chosen = list(fulls)
    for b in bases:
        deltas = [
            a
            for a in mine
            if a.info.version == want
            and a.info.kind == "delta"
            and a.info.base is not None
            and str(a.info.base.version) == b
        ]
        if not deltas:
            raise NoSuchVersionError(
                f"{product} {want}: no published delta from {b}",
                hint="export without --from-version, or release with more --deltas",
            )
        chosen.extend(deltas)
    return want, chosen


def export(
    repo_dir: Path,
    keyconf: KeyConfig,
    product: str,
    out: Path,
    now: datetime,
    *,
    version: str | None = None,
    bases: tuple[str, ...] = (),
    valid_for: timedelta = DEFAULT_VALID_FOR,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> ExportResult:
    """Write the export to ``out`` (a new directory, or a ``.tar`` file) and publish the
    online snapshot/timestamp that keep the repository's versions ahead of it."""
    check_now(now)
    check_valid_for(valid_for)
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out}: already exists; an export is written to a new path")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: expected a path in an existing directory")
    signers = load_role_signers(keyconf, ONLINE_ROLES, env=env, prompt=prompt)
    with publisher_lock(repo_dir):
        state = load_state(repo_dir)
        check_root_current(state.root.signed, now)
        want, chosen = select_artifacts(
            published_artifacts(state, product), product, version, bases
        )
        until = (now + valid_for).replace(microsecond=0)
        for role, md in (("root", state.root), ("targets", state.targets)):
            if md.signed.expires < until:
                raise UsageError(
                    f"{role} v{md.signed.version} expires at {md.signed.expires.strftime(_ISO)}, "
                    f"before the export's window ends ({until.strftime(_ISO)})",
                    hint=f"choose a shorter --valid-for, or re-sign {role} first",
                )
        base_exp = Expiries()
        long = Expiries(
            root=base_exp.root,
            targets=base_exp.targets,
            snapshot=valid_for,
            timestamp=valid_for,
        )
        chain = sign_chain(stage_chain(state, None, now, long), signers, [state.root.signed])
        online_ts = Timestamp(
            version=chain.timestamp.version + 1,
            expires=base_exp.expires("timestamp", now),
            snapshot_meta=chain.snapshot.meta_file(),
        )
        online = sign_metadata(
            Metadata(online_ts), signers.get("timestamp", ()), [state.root.signed]
        )
        files = _export_files(state.repo_dir, state, chain.snapshot.data, product)
        files[f"metadata/{chain.snapshot.filename}"] = chain.snapshot.data
        files["metadata/timestamp.json"] = chain.timestamp.data
        blobs = {f"targets/{_stored_name(a)}": a.stored_path for a in chosen}
        manifest = {
            "otakit_export": EXPORT_SCHEMA,
            "product": product,
            "hardware": sorted({h for a in chosen for h in a.info.hardware}),
            "version": str(want),
            "bases": list(bases),
            "created": now.strftime(_ISO),
            "valid_until": until.strftime(_ISO),
            "valid_for_days": round(valid_for / timedelta(days=1), 3),
            "timestamp_version": chain.timestamp.version,
            "snapshot_version": chain.snapshot.version,
            "targets": [
                {
                    "target": a.target_path,
                    "kind": a.info.kind,
                    "length": a.length,
                    "sha256": a.sha256,
                }
                for a in chosen
            ],
        }
        files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        # the export first: if writing it fails, the repository is untouched
        _write(out, files, blobs, now)
        publish(
            repo_dir,
            SignedRelease((), None, chain.snapshot, online),
            disk=PublishDisk(),
        )
    warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers])
    names = tuple(sorted([*files, *blobs]))
    return ExportResult(out, product, str(want), bases, names, manifest, online_ts.version)


def _stored_name(a: PublishedArtifact) -> str:
    dirname, sep, base = a.target_path.rpartition("/")
    return f"{dirname}{sep}{a.sha256}.{base}"


def _export_files(
    repo_dir: Path, state: Any, snapshot_bytes: bytes, product: str
) -> dict[str, bytes]:
    """Every root, the published targets, and the product's delegated roles (product role
    and its hash bins) at the versions the export's snapshot names."""
    mdir = metadata_dir(repo_dir)
    out: dict[str, bytes] = {}
    for v in range(1, state.root.signed.version + 1):
        name = metadata_filename("root", v)
        path = mdir / name
        if not path.is_file():
            raise RepositoryStateError(f"{path}: root v{v} is missing from the repository")
        out[f"metadata/{name}"] = path.read_bytes()
    snap: Snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes).signed
    for meta_name, meta in snap.meta.items():
        role = meta_name.removesuffix(".json")
        if role != "targets" and role != product and not role.startswith(bin_prefix(product)):
            continue
        name = role_filename(role, meta.version)
        path = mdir / name
        if not path.is_file():
            raise RepositoryStateError(f"{path}: listed in the snapshot, missing on disk")
        data = path.read_bytes()
        if meta.hashes and hashlib.sha256(data).hexdigest() != meta.hashes.get(
            "sha256", hashlib.sha256(data).hexdigest()
        ):
            raise RepositoryStateError(f"{path}: does not match the snapshot's hash")
        out[f"metadata/{name}"] = data
    return out


def _write(out: Path, files: dict[str, bytes], blobs: dict[str, Path], now: datetime) -> None:
    """A directory (written as OUT.partial, renamed) or, for ``.tar``, a tar archive of
    regular files only (written as OUT.partial, fsynced, renamed)."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    try:
        if out.suffix == ".tar":
            with tmp.open("xb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted(files):
                        info = _member(name, len(files[name]), now)
                        tar.addfile(info, io.BytesIO(files[name]))
                    for name in sorted(blobs):
                        with blobs[name].open("rb") as blob:
                            size = os.fstat(blob.fileno()).st_size
                            tar.addfile(_member(name, size, now), blob)
                f.flush()
                os.fsync(f.fileno())
        else:
            for name, data in {**files}.items():
                p = tmp / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            for name, src in blobs.items():
                p = tmp / name
                p.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, p)
            _fsync_tree(tmp)
        tmp.rename(out)
        dfd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise RepositoryStateError(f"cannot write the export {out}: {e.strerror or e}") from e
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _member(name: str, size: int, now: datetime) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(now.timestamp())
    info.type = tarfile.REGTYPE
    return info


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if p.is_dir() else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
