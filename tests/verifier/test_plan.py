"""The resolve policy as tables: (published targets, device facts, request) -> decision."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import pytest

from verifier.artifact import ArtifactInfo, BaseRef, ImageRef, ImageVersion, target_path
from verifier.errors import DowngradeError, IncompatibleTargetError, NoSuchVersionError
from verifier.imagetype import ImageType
from verifier.plan import Candidate, DeviceFacts, Installed, NothingToDo, Policy, resolve


def img(version: str, product: str = "edge-gw") -> ImageRef:
    return ImageRef(1000, hashlib.sha256(f"{product}-{version}".encode()).hexdigest())


def full(
    version: str, hw: tuple[str, ...] = ("rpi4",), product: str = "edge-gw", downgrade: bool = False
) -> Candidate:
    info = ArtifactInfo(
        product,
        hw,
        ImageVersion.parse(version),
        "full",
        "zstd",
        img(version, product),
        allow_downgrade=downgrade,
    )
    return Candidate.of(target_path(info), 900, {"sha256": "ab" * 32}, info)


def delta(version: str, base: str, length: int = 100, hw: tuple[str, ...] = ("rpi4",)) -> Candidate:
    info = ArtifactInfo(
        "edge-gw",
        hw,
        ImageVersion.parse(version),
        "delta",
        "otakit-delta",
        img(version),
        BaseRef(ImageVersion.parse(base), img(base)),
        ImageRef(64, "cd" * 32),
    )
    return Candidate.of(target_path(info), length, {"sha256": "ef" * 32}, info)


def facts(
    installed: str = "1.0",
    failed: tuple[str, ...] = (),
    pending: str | None = None,
    hardware: str = "rpi4",
) -> DeviceFacts:
    return DeviceFacts(
        "edge-gw",
        hardware,
        Installed(ImageVersion.parse(installed), img(installed)),
        frozenset(img(v).sha256 for v in failed),
        None if pending is None else Installed(ImageVersion.parse(pending), img(pending)),
    )


@dataclass(frozen=True)
class Row:
    name: str
    targets: list[Candidate]
    facts: DeviceFacts
    # expected: ("plan", version, artifact path, fallback path|None) or ("nothing", substring)
    expect: tuple[str, ...]
    policy: Policy = field(default_factory=Policy)


ROWS = [
    Row(
        "newest wins",
        [full("1.0"), full("2.0"), full("1.5")],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
    ),
    Row(
        "numeric order, not text (2.10 > 2.9)",
        [full("2.9"), full("2.10")],
        facts("2.0"),
        ("plan", "2.10", "edge-gw/2.10/full.img.zst", None),
    ),
    Row("already newest", [full("1.0")], facts(), ("nothing", "version 1.0 is installed")),
    Row(
        "anti-rollback: only older published", [full("0.9")], facts(), ("nothing", "no newer image")
    ),
    Row(
        "signed allow_downgrade permits going back",
        [full("0.9", downgrade=True)],
        facts(),
        ("plan", "0.9", "edge-gw/0.9/full.img.zst", None),
    ),
    Row(
        "failed image is skipped, older newer-than-installed chosen",
        [full("2.0"), full("3.0")],
        facts(failed=("3.0",)),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
    ),
    Row(
        "failed image is not retried",
        [full("2.0")],
        facts(failed=("2.0",)),
        ("nothing", "2.0, which failed its trial"),
    ),
    Row(
        "a newer version after a failure is installed",
        [full("2.0"), full("2.1")],
        facts(failed=("2.0",)),
        ("plan", "2.1", "edge-gw/2.1/full.img.zst", None),
    ),
    Row(
        "pending trial is not redone",
        [full("2.0")],
        facts(pending="2.0"),
        ("nothing", "already pending"),
    ),
    Row(
        "delta from the booted image preferred, full as fallback",
        [full("2.0"), delta("2.0", "1.0")],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/delta-from-1.0.otd", "edge-gw/2.0/full.img.zst"),
    ),
    Row(
        "delta from another base ignored",
        [full("2.0"), delta("2.0", "0.9")],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
    ),
    Row(
        "delta disabled by policy",
        [full("2.0"), delta("2.0", "1.0")],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
        Policy(allow_delta=False),
    ),
    Row(
        "delta only, matching base",
        [delta("2.0", "1.0")],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/delta-from-1.0.otd", None),
    ),
    Row(
        "other product never chosen",
        [full("9.0", product="other-gw")],
        facts(),
        ("nothing", "no image for product 'edge-gw'"),
    ),
    Row(
        "other hardware never chosen, said clearly",
        [full("1.0"), full("2.0", hw=("x86-64",))],
        facts(),
        ("nothing", "published for hardware ['x86-64'], not for 'rpi4'"),
    ),
    Row(
        "multi-hardware target matches",
        [full("2.0", hw=("x86-64", "rpi4"))],
        facts(),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
    ),
    Row(
        "requested older version with allow_downgrade",
        [full("2.0"), full("0.5", downgrade=True)],
        facts(),
        ("plan", "0.5", "edge-gw/0.5/full.img.zst", None),
        Policy(version=ImageVersion.parse("0.5")),
    ),
    Row(
        "requested failed version: operator overrides memory",
        [full("2.0")],
        facts(failed=("2.0",)),
        ("plan", "2.0", "edge-gw/2.0/full.img.zst", None),
        Policy(version=ImageVersion.parse("2.0")),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_resolve(row: Row) -> None:
    out = resolve(row.targets, row.facts, row.policy)
    if row.expect[0] == "nothing":
        assert isinstance(out, NothingToDo), out
        assert row.expect[1] in out.reason
        return
    assert not isinstance(out, NothingToDo), out.reason
    _, version, path, fallback = row.expect
    assert str(out.version) == version
    assert out.artifact.path == path
    assert (out.fallback.path if out.fallback else None) == fallback


@dataclass(frozen=True)
class Refusal:
    name: str
    targets: list[Candidate]
    version: str
    error: type[Exception]
    says: str


REFUSALS = [
    Refusal(
        "requested older without permission",
        [full("0.5")],
        "0.5",
        DowngradeError,
        "does not allow a downgrade",
    ),
    Refusal(
        "requested version not published",
        [full("2.0")],
        "3.0",
        NoSuchVersionError,
        "not published",
    ),
    Refusal(
        "requested version for other hardware",
        [full("2.0", hw=("x86-64",))],
        "2.0",
        NoSuchVersionError,
        "published for hardware ['x86-64']",
    ),
    Refusal(
        "requested version of other product",
        [full("2.0", product="other-gw")],
        "2.0",
        NoSuchVersionError,
        "not published",
    ),
    Refusal(
        "only a delta from another base",
        [delta("2.0", "0.9")],
        "2.0",
        IncompatibleTargetError,
        "no full artifact and no delta",
    ),
]


@pytest.mark.parametrize("row", REFUSALS, ids=[r.name for r in REFUSALS])
def test_resolve_refuses(row: Refusal) -> None:
    with pytest.raises(row.error) as exc:
        resolve(row.targets, facts(), Policy(version=ImageVersion.parse(row.version)))
    assert row.says in str(exc.value)


def test_smallest_matching_delta_wins() -> None:
    out = resolve([full("2.0"), delta("2.0", "1.0", 500), delta("2.0", "1.0", 200)], facts())
    assert not isinstance(out, NothingToDo)
    assert out.artifact.length == 200


# --- image type: a device configured with the type its slots hold ---------------------------


def typed(c: Candidate, image_type: ImageType | None) -> Candidate:
    return replace(c, info=replace(c.info, image_type=image_type))


def facts_of(image_type: ImageType | None) -> DeviceFacts:
    return replace(facts(), image_type=image_type)


@dataclass(frozen=True)
class TypeRow:
    name: str
    targets: list[Candidate]
    configured: ImageType | None
    # ("plan", artifact path) or ("refused", substrings of the reason)
    expect: tuple[str, ...]
    policy: Policy = field(default_factory=Policy)


TYPE_ROWS = [
    TypeRow(
        "same type installs",
        [typed(full("2.0"), "ext4")],
        "ext4",
        ("plan", "edge-gw/2.0/full.img.zst"),
    ),
    TypeRow(
        "unconfigured device installs any type",
        [typed(full("2.0"), "squashfs")],
        None,
        ("plan", "edge-gw/2.0/full.img.zst"),
    ),
    TypeRow(
        "unconfigured device installs an untyped (schema 1.0) target",
        [full("2.0")],
        None,
        ("plan", "edge-gw/2.0/full.img.zst"),
    ),
    TypeRow(
        "other type refused, both types named",
        [typed(full("2.0"), "squashfs")],
        "ext4",
        ("refused", "signed as a squashfs image", "slots hold ext4"),
    ),
    TypeRow(
        "newest of another type refused, not silently skipped to an older one",
        [typed(full("1.5"), "ext4"), typed(full("2.0"), "squashfs")],
        "ext4",
        ("refused", "version 2.0", "squashfs", "ext4"),
    ),
    TypeRow(
        "raw target refused on a typed device",
        [typed(full("2.0"), "raw")],
        "ext4",
        ("refused", "signed as a raw image", "ext4"),
    ),
    TypeRow(
        "untyped (schema 1.0) target refused on a typed device",
        [full("2.0")],
        "ext4",
        ("refused", "does not say its image type", "configured for ext4"),
    ),
    TypeRow(
        "requested version of another type refused",
        [typed(full("2.0"), "ext4"), typed(full("3.0"), "tar")],
        "ext4",
        ("refused", "version 3.0", "signed as a tar image"),
        Policy(version=ImageVersion.parse("3.0")),
    ),
    TypeRow(
        "a delta of another type is not used; the full of the right type is",
        [typed(full("2.0"), "ext4"), typed(delta("2.0", "1.0"), "tar")],
        "ext4",
        ("plan", "edge-gw/2.0/full.img.zst"),
    ),
    TypeRow(
        "a delta of the right type is used",
        [typed(full("2.0"), "ext4"), typed(delta("2.0", "1.0"), "ext4")],
        "ext4",
        ("plan", "edge-gw/2.0/delta-from-1.0.otd"),
    ),
]


@pytest.mark.parametrize("row", TYPE_ROWS, ids=[r.name for r in TYPE_ROWS])
def test_resolve_by_image_type(row: TypeRow) -> None:
    if row.expect[0] == "refused":
        with pytest.raises(IncompatibleTargetError) as exc:
            resolve(row.targets, facts_of(row.configured), row.policy)
        for part in row.expect[1:]:
            assert part in exc.value.message
        return
    out = resolve(row.targets, facts_of(row.configured), row.policy)
    assert not isinstance(out, NothingToDo), out.reason
    assert out.artifact.path == row.expect[1]
