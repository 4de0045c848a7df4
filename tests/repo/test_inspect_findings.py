"""Findings, rule by rule: a report that makes each one fire, and a near miss where it stays
quiet. Reports are built by hand (the rules are pure functions of the report); the real
repositories are in test_inspect_report.py. docs/FINDINGS.md is checked against the rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repo.findings import ALL_RULES, RULES, Policy, at_or_above, find
from repo.inspect_report import (
    Anomaly,
    Delegation,
    InspectReport,
    KeyInfo,
    RoleInfo,
    RootLink,
    TargetInfo,
)
from verifier.artifact import ArtifactInfo, BaseRef, ImageRef, ImageVersion
from verifier.demokeys import DEMO_KEY_IDS

AT = datetime(2030, 6, 1, tzinfo=UTC)
H1, H2 = ImageRef(1000, "1" * 64), ImageRef(2000, "2" * 64)
DEMO_ID = next(iter(DEMO_KEY_IDS))


def key(keyid: str, *roles: str, **kw: object) -> KeyInfo:
    base = {"keytype": "ed25519", "scheme": "ed25519", "demo": False, "bits": None}
    base.update(kw)
    return KeyInfo(keyid, fingerprint="fp-" + keyid, roles=roles, **base)  # type: ignore[arg-type]


def role(name: str, days: float, keyids: tuple[str, ...], threshold: int = 1) -> RoleInfo:
    return RoleInfo(
        name, threshold, keyids, f"1.{name}.json", 1, AT + timedelta(days=days), len(keyids),
        keyids, (),
    )  # fmt: skip


def art(version: str, kind: str = "full", *, image: ImageRef = H2, **kw: object) -> ArtifactInfo:
    fields: dict[str, object] = {
        "product": "edge-gw", "hardware": ("board",), "version": ImageVersion.parse(version),
        "kind": kind, "compression": "zstd" if kind == "full" else "otakit-delta",
        "image": image, "image_type": "ext4",
    }  # fmt: skip
    if kind == "delta":
        fields["base"] = BaseRef(ImageVersion.parse("1.0"), H1)
        fields["delta_header"] = ImageRef(64, "3" * 64)
    fields.update(kw)
    return ArtifactInfo(**fields)  # type: ignore[arg-type]


def target(path: str, a: ArtifactInfo | None, error: str | None = None) -> TargetInfo:
    from repo.inspect_report import path_problem

    return TargetInfo(path, 10, (("sha256", "f" * 64),), a, error, path_problem(path))


FULL1 = target("edge-gw/1.0/full.img.zst", art("1.0", image=H1))
FULL2 = target("edge-gw/2.0/full.img.zst", art("2.0"))
DELTA2 = target("edge-gw/2.0/delta-from-1.0.otd", art("2.0", "delta"))

CLEAN = InspectReport(
    source="test",
    at=AT,
    pinned_root_version=1,
    root_chain=(RootLink(1),),
    roles=(
        role("root", 365, ("r1", "r2"), threshold=2),
        role("timestamp", 1, ("ts",)),
        role("snapshot", 7, ("sn",)),
        role("targets", 90, ("tg",)),
    ),
    keys=(
        key("r1", "root"),
        key("r2", "root"),
        key("sn", "snapshot"),
        key("tg", "targets"),
        key("ts", "timestamp"),
    ),
    consistent_snapshot=True,
    delegations=(),
    targets=(FULL1, DELTA2, FULL2),
    anomalies=(),
    failures=(),
    verified=True,
)

Edit = Callable[[InspectReport], InspectReport]


def roles(r: InspectReport, name: str, **kw: object) -> InspectReport:
    return replace(r, roles=tuple(replace(x, **kw) if x.name == name else x for x in r.roles))


def keys(*extra: KeyInfo, drop: str = "") -> Edit:
    return lambda r: replace(r, keys=tuple(k for k in r.keys if k.keyid != drop) + extra)


def targets(*ts: TargetInfo) -> Edit:
    return lambda r: replace(r, targets=ts)


def chain(n: int) -> Edit:
    return lambda r: replace(r, root_chain=tuple(RootLink(v) for v in range(1, n + 1)))


def delegations(*paths: tuple[str, ...]) -> Edit:
    return lambda r: replace(
        r,
        delegations=tuple(
            Delegation("targets", f"d{i}", 1, ("tg",), False, p, None) for i, p in enumerate(paths)
        ),
    )


def anomaly(kind: str) -> Edit:
    return lambda r: replace(r, anomalies=(Anomaly("3.targets.json", kind, "x"),))


def expires_in(name: str, t: timedelta) -> Edit:
    return lambda r: roles(r, name, expires=AT + t)


def shared(a: str, b: str) -> Edit:
    """Key ``b`` has the same public value as key ``a`` (another id, same key)."""
    return lambda r: replace(
        r, keys=tuple(replace(k, fingerprint="fp-" + a) if k.keyid == b else k for k in r.keys)
    )


#: rule id -> (what makes it fire, the near miss where it stays quiet)
CASES: dict[str, tuple[Edit, Edit]] = {
    "OTA-R001": (lambda r: roles(r, "root", threshold=1), lambda r: roles(r, "root", threshold=2)),
    "OTA-R002": (shared("r1", "tg"), shared("r1", "r2")),
    "OTA-R003": (shared("r1", "ts"), shared("sn", "ts")),
    "OTA-R004": (
        expires_in("timestamp", timedelta(hours=1)),
        expires_in("timestamp", timedelta(hours=5)),
    ),
    "OTA-R005": (lambda r: replace(r, consistent_snapshot=False), lambda r: r),
    "OTA-R006": (chain(12), chain(11)),
    "OTA-K001": (keys(key(DEMO_ID, "targets", demo=True)), keys(key(DEMO_ID, demo=True))),
    "OTA-K002": (
        keys(key("rsa", "targets", keytype="rsa", scheme="rsassa-pss-sha256", bits=2048)),
        keys(key("rsa", "targets", keytype="rsa", scheme="rsassa-pss-sha256", bits=3072)),
    ),
    "OTA-K003": (
        keys(key("odd", "targets", keytype="ed25519", scheme="ed448")),
        keys(key("ec", "targets", keytype="ecdsa", scheme="ecdsa-sha2-nistp256", bits=256)),
    ),
    "OTA-T001": (targets(FULL1, DELTA2), targets(FULL1, DELTA2, FULL2)),
    "OTA-T002": (
        targets(target(FULL1.path, art("1.0", image=H2)), DELTA2, FULL2),
        targets(FULL1, DELTA2, FULL2),
    ),
    "OTA-T003": (
        targets(
            FULL1,
            FULL2,
            target("x/d.otd", art("2.0", "delta", base=BaseRef(ImageVersion.parse("3.0"), H1))),
        ),
        targets(
            FULL1,
            FULL2,
            target(
                "x/d.otd",
                art(
                    "2.0",
                    "delta",
                    base=BaseRef(ImageVersion.parse("3.0"), H1),
                    allow_downgrade=True,
                ),
            ),
        ),
    ),
    "OTA-T004": (
        targets(FULL1, FULL2, target("notes.txt", None)),
        targets(FULL1, FULL2, target("notes.txt", None, "schema: expected 'MAJOR.MINOR'")),
    ),
    "OTA-T005": (
        targets(FULL1, target("edge-gw/3.0/full.img.zst", None, "kind: expected 'full'")),
        targets(FULL1, FULL2),
    ),
    "OTA-T006": (
        targets(FULL1, target(FULL2.path, art("2.0", image_type="squashfs"))),
        targets(FULL1, target(FULL2.path, art("2.0", image_type=None))),
    ),
    "OTA-T007": (
        targets(FULL1, FULL2, target("../../etc/passwd", None, "x")),
        targets(FULL1, FULL2, target("edge-gw/2.0/a..b", None, "x")),
    ),
    "OTA-D001": (
        delegations(("edge-gw/*",), ("edge-gw/2.0/*",)),
        delegations(("edge-gw/*",), ("other/*",)),
    ),
    "OTA-M001": (anomaly("duplicate-key"), anomaly("unknown-field")),
    "OTA-M002": (anomaly("unknown-field"), anomaly("duplicate-key")),
}


def test_the_clean_report_has_no_findings() -> None:
    assert find(CLEAN) == ()


def test_every_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(r.id for r in RULES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_a_finding_fires(rule_id: str) -> None:
    fire, _ = CASES[rule_id]
    found = [f for f in find(fire(CLEAN)) if f.id == rule_id]
    assert found, find(fire(CLEAN))
    assert all(f.detail and f.where and f.fix for f in found)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_a_finding_stays_quiet_on_the_near_miss(rule_id: str) -> None:
    _, quiet = CASES[rule_id]
    assert rule_id not in {f.id for f in find(quiet(CLEAN))}


def test_an_expired_role_is_a_failure_not_an_expiry_finding() -> None:
    expired = expires_in("targets", -timedelta(days=1))(CLEAN)
    assert "OTA-R004" not in {f.id for f in find(expired)}


def test_margins_are_per_role_and_a_policy_can_change_them() -> None:
    in_ten_days = expires_in("targets", timedelta(days=10))(CLEAN)
    assert {f.id for f in find(in_ten_days)} == {"OTA-R004"}  # targets margin: 14 days
    assert find(in_ten_days, Policy(targets_margin=timedelta(days=7))) == ()


def test_findings_come_most_severe_first_and_gate_by_severity() -> None:
    report = keys(key(DEMO_ID, "targets", demo=True))(roles(CLEAN, "root", threshold=1))
    found = find(report)
    assert [f.id for f in found] == ["OTA-K001", "OTA-R001"]
    assert [f.id for f in at_or_above(found, "critical")] == ["OTA-K001"]
    assert len(at_or_above(found, "info")) == 2


# --- docs/FINDINGS.md ----------------------------------------------------------------------

DOC = (Path(__file__).resolve().parents[2] / "docs" / "FINDINGS.md").read_text()


def test_every_rule_is_documented_with_its_severity_and_fix() -> None:
    rows = re.findall(r"^\| `(OTA-[A-Z]\d{3})` \| (\w+) \| (.+?) \| (.+?) \|$", DOC, re.M)
    assert [(i, s, t, f) for i, s, t, f in rows] == [
        (r.id, r.severity, r.title, r.fix) for r in ALL_RULES
    ]
    for r in ALL_RULES:
        assert f"### {r.id}" in DOC, r.id  # each has its own explanation
