"""The release workflow: image → full artifact (+ deltas) → signed targets → published.

One release is one repository transaction: every artifact of the release (the full image
and, later, deltas from earlier versions) becomes visible to devices at the same moment,
when ``timestamp.json`` is replaced, or not at all. Signing keys are resolved before any
slow work, so a missing key or PIN fails in a second rather than after compressing an image.

Before keys are even loaded, the image's first bytes must show what it is (``verifier.imagetype``):
a release pipeline handed the wrong file (a log, ``/etc/passwd``) stops there instead of
signing it for a fleet. The detected type is signed into ``custom`` so a device configured with
its slots' type can refuse another one. ``dry_run`` runs the same path up to, not including,
signing, and leaves the repository untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import zstandard
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from repo.delegation import published_targets
from repo.demo_warnings import warn_demo_keys
from repo.errors import (
    ImageReadError,
    RepositoryStateError,
    UsageError,
    VersionNotNewerError,
)
from repo.keys import KeyConfig, PromptFn
from repo.layout import stored_target_path
from repo.publish import ProgressFn
from repo.repository import (
    Expiries,
    Transaction,
    open_transaction,
    release_signers,
)
from repo.roles import RoleSigners
from repo.rollout_spec import parse_waves
from repo.state import RepoState, load_state
from signer.compress import (
    CompressSettings,
    Progress,
    compress_image,
    image_length,
    self_check_full,
)
from verifier.artifact import (
    CUSTOM_KEY,
    ROLLOUT_SCHEMA,
    SCHEMA_VERSION,
    ArtifactInfo,
    BaseRef,
    ImageRef,
    ImageVersion,
    target_path,
)
from verifier.decode_full import MAX_WINDOW_LOG
from verifier.effects import Disk
from verifier.errors import ArtifactSchemaError
from verifier.imagetype import (
    DETECTABLE,
    HEAD_LENGTH,
    IMAGE_TYPES,
    ImageType,
    describe_unknown,
    detect,
    is_image_type,
)
from verifier.rollout import RolloutPolicy

#: Hardware id used when a release names none: "runs on whatever this product runs on".
DEFAULT_HARDWARE = "generic"

#: Warn when an image is more than this many times larger or smaller than the product's
#: previous release. Releases of one product differ by package updates (a few percent) or, at
#: most, a deliberately resized filesystem (say x2, when headroom is added); images padded to a
#: fixed slot size do not change at all. A factor of 4 stays quiet for every such change while
#: a wrong file of a plausible type (a kernel or initramfs instead of the root filesystem, a
#: tarball of one directory, a debug image with symbols) is far outside it. It only warns: a
#: product can legitimately change its image, and the type check is the hard gate.
SIZE_CHANGE_FACTOR = 4


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
            "image_type": self.info.image_type,
            "base_version": str(self.info.base.version) if self.info.base else None,
            "custom": self.info.to_custom(),
        }


@dataclass(frozen=True)
class ReleaseResult:
    """What was published, or with ``dry_run`` what would be: the same paths, lengths, hashes,
    custom metadata and metadata versions a real release would have produced at that moment."""

    product: str
    version: ImageVersion
    artifacts: tuple[PublishedArtifact, ...]
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    image_type: ImageType
    warnings: tuple[str, ...] = ()
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": str(self.version),
            "image_type": self.image_type,
            "dry_run": self.dry_run,
            "warnings": list(self.warnings),
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
    image_type: ImageType | None = None,
    rollout: RolloutPolicy | None = None,
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
    if image_type is not None:
        data["image_type"] = image_type
    if rollout is not None:
        data["schema"] = ROLLOUT_SCHEMA
        data["rollout"] = rollout.to_dict()
    try:
        return ArtifactInfo.from_custom({CUSTOM_KEY: data})
    except ArtifactSchemaError as e:
        raise UsageError(e.message, hint=e.hint) from e


def make_delta_info(full: ArtifactInfo, base: ArtifactInfo, header: ImageRef) -> ArtifactInfo:
    """The signed description of a delta turning ``base``'s image into ``full``'s image.

    Product, hardware, version, result image, its type, downgrade permission and rollout
    policy are the full artifact's: a delta is only another way to deliver exactly that
    image, so the waves and a halt hold whichever path a device takes.
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
        image_type=full.image_type,
        rollout=full.rollout,
    )


def build_full_artifact(
    image: Path,
    product: str,
    version: str,
    hardware: Sequence[str],
    workdir: Path,
    *,
    allow_downgrade: bool = False,
    image_type: ImageType | None = None,
    rollout: RolloutPolicy | None = None,
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
        image_type=image_type,
        rollout=rollout,
    )
    self_check_full(out, result)
    return BuiltArtifact(info, out, result.artifact.length, result.artifact.sha256)


def published_artifacts(state: RepoState, product: str | None = None) -> list[PublishedArtifact]:
    """Artifacts in ``state``'s targets metadata (of ``product`` if given), oldest first:
    the top-level targets and, for a delegated product, its role and hash bins."""
    found: list[PublishedArtifact] = []
    products = [product] if product is not None else _delegated_products(state)
    listed = dict(state.targets.signed.targets)
    for p in products:
        listed.update(published_targets(state, p))
    for path, target in listed.items():
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


def _delegated_products(state: RepoState) -> list[str]:
    dl = state.targets.signed.delegations
    return [] if dl is None or dl.roles is None else list(dl.roles)


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
    return tuple(
        p
        for product in sorted({a.info.product for a in artifacts})
        for p in published_artifacts(state, product)
        if p.target_path in paths
    )


@dataclass(frozen=True)
class ImageHead:
    """An image's first bytes (as many as type detection needs) and its total length."""

    head: bytes
    length: int


def read_image_head(image: Path) -> ImageHead:
    """Read only the head of ``image``: a release never holds a whole image in memory."""
    try:
        f = image.open("rb")
    except OSError as e:
        raise ImageReadError(f"cannot open image {image}: {e.strerror or e}") from e
    try:
        with f:
            length = image_length(f, image)
            return ImageHead(f.read(HEAD_LENGTH), length)
    except OSError as e:
        raise ImageReadError(f"cannot read image {image}: {e.strerror or e}") from e


def check_image_type(image: Path, head: ImageHead, requested: str | None) -> ImageType:
    """The type to sign for ``image``: the detected one, which ``requested`` must agree with.

    ``raw`` is the only way to release a file without a known signature, and it must be asked
    for; asking for a type the bytes contradict (including ``raw`` for a recognised image,
    which would make devices configured for that type refuse it) is refused too.
    """
    if requested is not None and not is_image_type(requested):
        raise UsageError(
            f"image type: expected one of {', '.join(IMAGE_TYPES)}, found {requested!r}"
        )
    found = detect(head.head)
    if requested is None:
        if found is None:
            raise UsageError(
                f"{image}: expected an OS image ({', '.join(DETECTABLE)}), found "
                f"{describe_unknown(head.head, head.length)}",
                hint="check the path; to release an image without a known signature "
                "anyway, pass --image-type raw",
            )
        return found
    if requested == "raw":
        if found is not None:
            raise UsageError(
                f"{image}: image type raw means no known signature, but the image carries "
                f"the {found} signature",
                hint=f"pass --image-type {found}, or leave the option out to detect it",
            )
        return "raw"
    if found != requested:
        what = f"image type {found}" if found else describe_unknown(head.head, head.length)
        raise UsageError(
            f"{image}: expected image type {requested} (as given), found {what}",
            hint="check the path, or leave --image-type out to detect the type",
        )
    return requested


def size_warnings(
    product: str, version: ImageVersion, length: int, published: Sequence[PublishedArtifact]
) -> tuple[str, ...]:
    """A warning when ``length`` is off from the previous release by ``SIZE_CHANGE_FACTOR``."""
    fulls = [a for a in published if a.info.product == product and a.info.kind == "full"]
    if not fulls:
        return ()
    prev = max(fulls, key=lambda a: a.info.version)
    old = prev.info.image.length
    if old * SIZE_CHANGE_FACTOR >= length and length * SIZE_CHANGE_FACTOR >= old:
        return ()
    change = f"{length / old:.1f}x larger" if length > old else f"{old / length:.1f}x smaller"
    return (
        f"{product} {version}: the image is {length} bytes, {change} than the previous "
        f"release {prev.info.version} ({old} bytes); check that this is the right image",
    )


def check_signed_head(artifact: Path, head: bytes, image: Path) -> None:
    """Prove the bytes the type was detected from are the bytes that were compressed.

    Detection and compression read the image separately; an image rewritten in between would
    otherwise be signed with a type read from other bytes.
    """
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
    got = bytearray()
    with artifact.open("rb") as f, dctx.stream_reader(f) as reader:
        while len(got) < len(head) and (chunk := reader.read(len(head) - len(got))):
            got += chunk
    if bytes(got) != head:
        raise ImageReadError(
            f"{image}: its first {len(head)} bytes changed between type detection and "
            "compression; was it modified during release?"
        )


def release_policy(
    waves: str | None, start: datetime | None, now: datetime
) -> RolloutPolicy | None:
    """The rollout policy ``--waves`` asks for (None: the whole fleet at once), checked before
    any slow work so a typo in the spec costs a second, not a compression."""
    if waves is None:
        if start is not None:
            raise UsageError(
                "--rollout-start: expected together with --waves, found it alone",
                hint='for example --waves "5%@0,25%@24h,100%@3d"',
            )
        return None
    return parse_waves(waves, (start or now).replace(microsecond=0))


@contextmanager
def _transaction(repo_dir: Path, dry_run: bool) -> Iterator[Transaction]:
    """The release's transaction. A dry run takes no lock (the lock file lives in the
    repository, which a dry run must leave byte for byte as it was) and never commits."""
    if dry_run:
        yield Transaction(load_state(repo_dir))
        return
    with open_transaction(repo_dir) as tx:
        yield tx


def plan_artifacts(
    tx: Transaction, artifacts: Sequence[BuiltArtifact]
) -> tuple[PublishedArtifact, ...]:
    """What publishing ``artifacts`` would list, after the same staging checks (paths free)."""
    for a in artifacts:
        tx.add_target(a.target_file(), a.path)
    planned = [
        PublishedArtifact(
            a.info,
            a.target_path,
            stored_target_path(tx.state.repo_dir, a.target_path, a.sha256),
            a.length,
            a.sha256,
        )
        for a in artifacts
    ]
    planned.sort(key=lambda a: (a.info.version, a.info.kind, a.target_path))
    return tuple(planned)


def release(
    repo_dir: Path,
    keyconf: KeyConfig,
    product: str,
    version: str,
    image: Path,
    hardware: Sequence[str],
    now: datetime,
    *,
    image_type: str | None = None,
    dry_run: bool = False,
    allow_downgrade: bool = False,
    waves: str | None = None,
    rollout_start: datetime | None = None,
    settings: CompressSettings | None = None,
    expiries: Expiries | None = None,
    signers: RoleSigners | None = None,
    product_keys: KeyConfig | None = None,
    extra_builder: ExtraBuilder | None = None,
    disk: Disk | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
    progress: Progress | None = None,
    log: ProgressFn | None = None,
) -> ReleaseResult:
    """Publish ``image`` as ``product`` ``version`` (plus whatever ``extra_builder`` adds).

    ``product_keys``: a delegated product's key file (``release_signers``).
    ``image_type`` None detects the type; ``dry_run`` builds and self-checks every artifact
    in a scratch directory outside the repository and returns what would be published,
    without loading keys (a dry run must not ask for a PIN), signing or writing anything.
    ``waves`` (``repo.rollout_spec``) gives every target of the release the same signed
    rollout policy, starting at ``rollout_start`` (default: ``now``, the release time).
    """
    say = log or (lambda _msg: None)
    rollout = release_policy(waves, rollout_start, now)
    info = make_info(product, version, hardware, 1, "0" * 64, allow_downgrade=allow_downgrade)
    head = read_image_head(image)
    kind = check_image_type(image, head, image_type)
    if signers is None and not dry_run:
        signers = release_signers(
            load_state(repo_dir), keyconf, product, product_keys, env=env, prompt=prompt
        )
    with _transaction(repo_dir, dry_run) as tx:
        published = published_artifacts(tx.state, product)
        check_version(product, info.version, published, allow_downgrade)
        warnings = size_warnings(product, info.version, head.length, published)
        if kind == "raw":
            warnings = (
                f"{image} is released as raw: no filesystem or disk-image signature was "
                "checked, and devices configured with an image type will refuse it",
                *warnings,
            )
        scratch = None if dry_run else repo_dir
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".otakit-build-") as tmp:
            workdir = Path(tmp)
            say(f"compressing {image} ({kind} image)")
            full = build_full_artifact(
                image,
                product,
                version,
                hardware,
                workdir,
                allow_downgrade=allow_downgrade,
                image_type=kind,
                rollout=rollout,
                settings=settings,
                progress=progress,
            )
            check_signed_head(full.path, head.head, image)
            artifacts = [full]
            if extra_builder is not None:
                artifacts.extend(extra_builder(full, image, published, workdir))
            if dry_run:
                done = plan_artifacts(tx, artifacts)
                st = tx.state
                return ReleaseResult(
                    product=product,
                    version=info.version,
                    artifacts=done,
                    targets_version=st.targets.signed.version + 1,
                    snapshot_version=st.snapshot.signed.version + 1,
                    timestamp_version=st.timestamp.signed.version + 1,
                    image_type=kind,
                    warnings=warnings,
                    dry_run=True,
                )
            assert signers is not None
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
            image_type=kind,
            warnings=warnings,
        )
