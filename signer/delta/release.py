"""Deltas in ``otakit release``: from the last N published versions to the new image.

Base images are recovered from the repository's own full artifacts (decoded with the device's
decoder and checked against their signed image hash), so a release pipeline keeps no state of
its own beyond the repository. Every delta is decoded again with the device decoder before
it is returned (``encode_delta`` verifies by default): nothing unproven reaches signing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from repo.errors import DeltaBuildError, SelfCheckError
from signer.delta.encode import DeltaOptions, encode_delta
from signer.release import BuiltArtifact, ExtraBuilder, PublishedArtifact, make_delta_info
from verifier.artifact import ArtifactInfo
from verifier.decode_full import decode_full
from verifier.effects import RealDisk
from verifier.errors import OtakitError

DEFAULT_MAX_BASES = 3
Say = Callable[[str], None]


def recover_base_image(artifact: PublishedArtifact, out: Path) -> None:
    """Decode a published full artifact into ``out``; its bytes must match the signed hash."""
    handle = RealDisk().open_write(out, new=not out.exists(), truncate=True)
    try:
        with artifact.stored_path.open("rb") as src:
            decode_full(src, handle, artifact.info.image)
        handle.fsync()
    except OtakitError as e:
        raise SelfCheckError(
            f"published artifact {artifact.target_path} does not decode to its signed image: "
            f"{e.message}",
            hint="the repository's stored target is damaged; re-publish that version",
        ) from e
    finally:
        handle.close()


def choose_bases(
    published: Sequence[PublishedArtifact], new: ArtifactInfo, max_bases: int
) -> list[PublishedArtifact]:
    """The newest ``max_bases`` full artifacts of the product older than ``new``."""
    fulls = [
        p
        for p in published
        if p.info.kind == "full" and p.info.product == new.product and p.info.version < new.version
    ]
    fulls.sort(key=lambda p: p.info.version, reverse=True)
    return fulls[:max_bases]


def delta_builder(
    max_bases: int = DEFAULT_MAX_BASES,
    options: DeltaOptions | None = None,
    say: Say | None = None,
) -> ExtraBuilder:
    """An ``ExtraBuilder`` for ``signer.release.release`` that adds one delta per base."""
    opts = options or DeltaOptions()
    log = say or (lambda _m: None)

    def build(
        full: BuiltArtifact,
        image: Path,
        published: Sequence[PublishedArtifact],
        workdir: Path,
    ) -> Sequence[BuiltArtifact]:
        built: list[BuiltArtifact] = []
        for base in choose_bases(published, full.info, max_bases):
            base_img = workdir / f"base-{base.info.version}.img"
            recover_base_image(base, base_img)
            out = workdir / f"delta-from-{base.info.version}.otd"
            try:
                res = encode_delta(base_img, image, out, options=opts)
            except DeltaBuildError as e:
                log(f"no delta from {base.info.version}: {e}")
                continue
            finally:
                base_img.unlink(missing_ok=True)
            if res.result != full.info.image or res.base != base.info.image:
                raise SelfCheckError(
                    f"delta from {base.info.version}: encoder saw base {res.base} and result "
                    f"{res.result}, signed metadata says {base.info.image} and {full.info.image}"
                )
            info = make_delta_info(full.info, base.info, res.header)
            if res.delta_length >= full.length:
                log(
                    f"delta from {base.info.version} ({res.delta_length} bytes) is not smaller "
                    f"than the full artifact ({full.length}); not publishing it"
                )
                continue
            built.append(BuiltArtifact(info, out, res.delta_length, _sha256(out)))
            log(
                f"delta from {base.info.version}: {res.delta_length} bytes "
                f"({res.delta_length / full.length:.1%} of the full artifact)"
            )
        return built

    return build


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
