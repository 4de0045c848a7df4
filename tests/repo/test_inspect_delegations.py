"""``otakit inspect`` of a repository with a delegated product: each delegation (delegator,
keys, threshold, paths or succinct bins, terminating), each delegated role as published
(version, expiry, signatures, and why a device would refuse it) and the delegated targets,
in the text and the JSON."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from repo.inspect_report import build_report, report_json
from repo.keys import KeyConfig
from repo.sources import LocalSource
from tests.helpers_delegation import product_keys
from tests.helpers_repo import NOW, publisher_cli, root_bytes
from tests.repo.test_delegation import _delegate, _release

P = "edge-gw"


@pytest.fixture
def delegated(repo: Path, keys: KeyConfig, tmp_path: Path) -> Path:
    pk = product_keys(tmp_path / "k", P, "a")
    _delegate(repo, keys, pk, P, bins=2, head=1)
    for v in ("1.0", "2.0"):
        _release(repo, tmp_path, keys, pk, P, v)
    return repo


def test_the_report_shows_delegations_delegated_roles_and_their_targets(
    delegated: Path,
) -> None:
    report = build_report(LocalSource(delegated), root_bytes(delegated), NOW)
    assert report.verified and not report.failures
    (top, bins) = report.delegations
    assert (top.delegator, top.name, top.terminating, top.paths) == (
        "targets",
        P,
        True,
        (f"{P}/*/*",),
    )
    assert (bins.delegator, bins.name) == (P, f"{P}-bin-* (2 hash bins)")
    assert bins.keyids == top.keyids and bins.threshold == 1
    roles = {d.name: d for d in report.delegated_roles}
    assert list(roles) == [P, f"{P}-bin-0", f"{P}-bin-1"]
    assert all(d.problem is None and d.signatures_valid == d.keyids for d in roles.values())
    assert roles[P].delegator == "targets" and roles[f"{P}-bin-0"].delegator == P
    assert roles[P].version == 3 and roles[P].file == f"3.{P}.json"
    listed = {t.path: t.role for t in report.targets}
    assert listed[f"{P}/2.0/full.img.zst"] == P  # the head
    assert listed[f"{P}/1.0/full.img.zst"].startswith(f"{P}-bin-")  # left the head
    product_keyids = {k.keyid: k.roles for k in report.keys if P in k.roles}
    assert product_keyids and all(f"{P}-bin-*" in r for r in product_keyids.values())

    doc = report_json(report)
    by_name = {d["name"]: d for d in doc["delegated_roles"]}
    assert by_name[P]["signatures"]["valid"] == list(roles[P].keyids)
    assert by_name[f"{P}-bin-1"]["problem"] is None and by_name[P]["seconds_left"] > 0
    assert {t["role"] for t in doc["targets"]} >= {P}


def test_a_refused_delegated_role_is_shown_with_why(delegated: Path) -> None:
    later = NOW + timedelta(days=100)  # product role and bins expired (91 days)
    report = build_report(LocalSource(delegated), root_bytes(delegated), NOW)
    bin0 = next(d for d in report.delegated_roles if "-bin-" in d.name and d.targets)
    assert bin0.file is not None
    path = delegated / "metadata" / bin0.file
    doc = json.loads(path.read_bytes())
    doc["signed"]["targets"] = {}  # the bin emptied after signing
    path.write_text(json.dumps(doc))
    refused = build_report(LocalSource(delegated), root_bytes(delegated), NOW)
    bad = {d.name: d.problem for d in refused.delegated_roles}
    assert bad[P] is None and "signature" in (bad[bin0.name] or "")
    expired = build_report(LocalSource(delegated), root_bytes(delegated), later)
    assert "expired" in (next(d for d in expired.delegated_roles if d.name == P).problem or "")


def test_cli_text_and_json_show_the_delegated_product(
    delegated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(delegated / "metadata" / "1.root.json")
    argv = ("inspect", str(delegated), "--root", root, "--at", NOW.isoformat())
    code, out, err = publisher_cli(capsys, *argv)
    assert code == 0, err
    assert "Delegated roles" in out and f"targets -> {P} (terminating)" in out
    assert f"{P} -> {P}-bin-0" in out and f"listed by {P}-bin-" in out
    code, out, err = publisher_cli(capsys, *argv, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [d["name"] for d in doc["delegated_roles"]] == [P, f"{P}-bin-0", f"{P}-bin-1"]
    assert any(d["delegator"] == P for d in doc["delegations"])
