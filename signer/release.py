"""The release workflow: image → full artifact (+ deltas) → signed targets → published.

One release is one repository transaction: every artifact of the release (the full image
and, later, deltas from earlier versions) becomes visible to devices at the same moment,
when ``timestamp.json`` is replaced, or not at all. Signing keys are resolved before any
slow work, so a missing key or PIN fails in a second rather than after compressing an image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from repo.demo_warnings import warn_demo_keys
from repo.errors import RepositoryStateError, UsageError, VersionNotNewerError
from repo.keys import KeyConfig, PromptFn
from repo.layout import stored_target_path
from repo.publish import ProgressFn
from repo.repository import Expiries, Transaction, load_role_signers, open_transaction
from repo.roles import CHAIN_ROLES, RoleSigners
from repo.state import RepoState, load_state
from signer.compress import CompressSettings, Progress, compress_image, self_check_full
from verifier.artifact import (
    CUSTOM_KEY,
    SCHEMA_VERSION,
    ArtifactInfo,
    BaseRef,
    ImageRef,
    ImageVersion,
    target_path,
)
from verifier.effects import Disk
from verifier.errors import ArtifactSchemaError

#: Hardware id used when a release names none: "runs on whatever this product runs on".
DEFAULT_HARDWARE = "generic"


@dataclass(frozen=True)
class BuiltArtifact:
    """An artifact file built and self-checked, with the signed description it will carry."""

    info: ArtifactInfo
    path: Path
    length: int
    sha256: str

    @property
    def target_path(self) -> str:
        return target_path(self.info)

    def target_file(self) -> TargetFile:
        return TargetFile(
            length=self.length,
            hashes={"sha256": self.sha256},
            path=self.target_path,
            unrecognized_fields={"custom": self.info.to_custom()},
        )


@dataclass(frozen=True)
class PublishedArtifact:
    """An artifact listed in the published targets metadata and where its bytes are stored."""

    info: ArtifactInfo
    target_path: str
    stored_path: Path
    length: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target_path,
            "file": str(self.stored_path),
            "kind": self.info.kind,
            "version": str(self.info.version),
            "length": self.length,
            "sha256": self.sha256,
            "image": self.info.image.to_dict(),
            "base_version": str(self.info.base.version) if self.info.base else None,
        }


@dataclass(frozen=True)
class ReleaseResult:
    product: str
    version: ImageVersion
    artifacts: tuple[PublishedArtifact, ...]
    targets_version: int
    snapshot_version: int
    timestamp_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": str(self.version),
            "artifacts": [a.to_json() for a in self.artifacts],
            "metadata": {
                "targets": self.targets_version,
                "snapshot": self.snapshot_version,
                "timestamp": self.timestamp_version,
            },
        }


#: Hook that builds extra artifacts (deltas) for the same transaction:
#: (the new full artifact, the new image file, artifacts already published for the product,
#: a scratch directory inside the repository) -> more built artifacts.
ExtraBuilder = Callable[
    [BuiltArtifact, Path, Sequence[PublishedArtifact], Path], Sequence[BuiltArtifact]
]


def make_info(
    product: str,
    version: str,
    hardware: Sequence[str],
    image_length: int,
    image_sha256: str,
    *,
    allow_downgrade: bool = False,
) -> ArtifactInfo:
    """A full-artifact description, validated by the device's own parser."""
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "product": product,
        "hardware": list(hardware) or [DEFAULT_HARDWARE],
        "version": version,
        "kind": "full",
        "compression": "zstd",
        "image": {"length": image_length, "sha256": image_sha256},
    }
    if allow_downgrade:
        data["allow_downgrade"] = True
    try:
        return ArtifactInfo.from_custom({CUSTOM_KEY: data})
    except ArtifactSchemaError as e:
        raise UsageError(e.message, hint=e.hint) from e


def make_delta_info(full: ArtifactInfo, base: ArtifactInfo, header: ImageRef) -> ArtifactInfo:
    """The signed description of a delta turning ``base``'s image into ``full``'s image.

    Product, hardware, version, result image and downgrade permission are the full
    artifact's: a delta is only another way to deliver exactly that image.
    """
    return ArtifactInfo(
        product=full.product,
        hardware=full.hardware,
        version=full.version,
        kind="delta",
        compression="otakit-delta",
        image=full.image,
        base=BaseRef(base.version, base.image),
        delta_header=header,
        allow_downgrade=full.allow_downgrade,
    )


def build_full_artifact(
    image: Path,
    product: str,
    version: str,
    hardware: Sequence[str],
    workdir: Path,
    *,
    allow_downgrade: bool = False,
    settings: CompressSettings | None = None,
    progress: Progress | None = None,
) -> BuiltArtifact:
    """Compress ``image`` into ``workdir`` and prove it decodes back with the device decoder."""
    make_info(product, version, hardware, 1, "0" * 64)  # refuse bad names before the slow part
    out = workdir / f"{product}-{version}.full.img.zst"
    result = compress_image(image, out, settings=settings, progress=progress)
    info = make_info(
        product,
        version,
        hardware,
        result.image.length,
        result.image.sha256,
        allow_downgrade=allow_downgrade,
    )
    self_check_full(out, result)
    return BuiltArtifact(info, out, result.artifact.length, result.artifact.sha256)


def published_artifacts(state: RepoState, product: str | None = None) -> list[PublishedArtifact]:
    """Artifacts in ``state``'s targets metadata (of ``product`` if given), oldest first."""
    found: list[PublishedArtifact] = []
    for path, target in state.targets.signed.targets.items():
        if CUSTOM_KEY not in (target.custom or {}):
            continue
        try:
            info = ArtifactInfo.from_custom(target.custom)
        except ArtifactSchemaError as e:
            raise RepositoryStateError(f"published target {path}: {e.message}") from e
        if product is not None and info.product != product:
            continue
        sha = target.hashes.get("sha256")
        if sha is None:
            raise RepositoryStateError(f"published target {path}: no sha256 hash")
        found.append(
            PublishedArtifact(
                info, path, stored_target_path(state.repo_dir, path, sha), target.length, sha
            )
        )
    found.sort(key=lambda a: (a.info.version, a.info.kind, a.target_path))
    return found


def list_published(repo_dir: Path, product: str | None = None) -> list[PublishedArtifact]:
    """Artifacts currently published in ``repo_dir`` (of ``product`` if given), oldest first."""
    state = load_state(repo_dir)
    warn_demo_keys(root=state.root.signed, repo=repo_dir)
    return published_artifacts(state, product)


def check_version(
    product: str,
    version: ImageVersion,
    published: Sequence[PublishedArtifact],
    allow_downgrade: bool,
) -> None:
    """Refuse a version that is not newer than every published one (unless downgrading)."""
    versions = [a.info.version for a in published if a.info.product == product]
    if version in versions:
        raise VersionNotNewerError(
            f"{product} {version}: already published; published artifacts are immutable",
            hint="release a new version number",
        )
    newest = max(versions, default=None)
    if newest is not None and version < newest and not allow_downgrade:
        raise VersionNotNewerError(
            f"{product} {version}: expected a version newer than the newest published ({newest})",
            hint="use --allow-downgrade to publish a signed, deliberate downgrade",
        )


def publish_artifacts(
    tx: Transaction,
    artifacts: Sequence[BuiltArtifact],
    signers: RoleSigners,
    now: datetime,
    *,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    progress: ProgressFn | None = None,
) -> tuple[PublishedArtifact, ...]:
    """Add ``artifacts`` to ``tx`` and commit them together in one signed publication."""
    for a in artifacts:
        tx.add_target(a.target_file(), a.path)
    state = tx.commit(signers, now, expiries=expiries, disk=disk, progress=progress)
    paths = {a.target_path for a in artifacts}
    return tuple(p for p in published_artifacts(state) if p.target_path in paths)


def release(
    repo_dir: Path,
    keyconf: KeyConfig,
    product: str,
    version: str,
    image: Path,
    hardware: Sequence[str],
    now: datetime,
    *,
    allow_downgrade: bool = False,
    settings: CompressSettings | None = None,
    expiries: Expiries | None = None,
    signers: RoleSigners | None = None,
    extra_builder: ExtraBuilder | None = None,
    disk: Disk | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
    progress: Progress | None = None,
    log: ProgressFn | None = None,
) -> ReleaseResult:
    """Publish ``image`` as ``product`` ``version`` (plus whatever ``extra_builder`` adds)."""
    say = log or (lambda _msg: None)
    info = make_info(product, version, hardware, 1, "0" * 64, allow_downgrade=allow_downgrade)
    if signers is None:
        signers = load_role_signers(keyconf, CHAIN_ROLES, env=env, prompt=prompt)
    with open_transaction(repo_dir) as tx:
        published = published_artifacts(tx.state, product)
        check_version(product, info.version, published, allow_downgrade)
        with tempfile.TemporaryDirectory(dir=repo_dir, prefix=".otakit-build-") as tmp:
            workdir = Path(tmp)
            say(f"compressing {image}")
            full = build_full_artifact(
                image,
                product,
                version,
                hardware,
                workdir,
                allow_downgrade=allow_downgrade,
                settings=settings,
                progress=progress,
            )
            artifacts = [full]
            if extra_builder is not None:
                artifacts.extend(extra_builder(full, image, published, workdir))
            say("signing and publishing")
            done = publish_artifacts(
                tx, artifacts, signers, now, expiries=expiries, disk=disk, progress=say
            )
        st = tx.state
        warn_demo_keys(root=st.root.signed, repo=repo_dir, signers=[signers])
        return ReleaseResult(
            product=product,
            version=info.version,
            artifacts=done,
            targets_version=st.targets.signed.version,
            snapshot_version=st.snapshot.signed.version,
            timestamp_version=st.timestamp.signed.version,
        )
