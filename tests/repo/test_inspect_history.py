"""``otakit inspect history``: every root and targets version of a real repository (the
story of test_inspect_diff: two releases, a rotation that lowers the root threshold, a
withdrawn release), each verified and compared with the one before; the cross-version
findings OTA-H001..H003 fire on it and stay quiet on the repository before the rotation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from repo.findings import HISTORY_RULES, find_history
from repo.inspect_history import History, VersionEntry, build_history, history_json
from repo.sources import LocalSource
from tests.helpers_repo import NOW
from tests.repo.test_inspect_diff import Story, build_story, otakit
from tests.repo.test_inspect_findings import CLEAN, FULL1, FULL2, art, target
from verifier.artifact import ImageRef


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return build_story(tmp_path_factory.mktemp("story"))


def history(story: Story, repo: Path | None = None) -> History:
    return build_history(
        LocalSource(repo or story.repo), story.root.read_bytes(), NOW, source_name="r"
    )


def test_every_version_is_listed_with_what_it_changed(story: Story) -> None:
    h = history(story)
    assert h.verified
    assert [e.version for e in h.roots] == [1, 2]
    assert [e.version for e in h.targets] == [1, 2, 3, 4, 5] and h.targets_not_kept == ()
    assert h.roots[0].changes is None  # the pinned root: nothing before it
    rotation = h.roots[1].changes
    assert rotation is not None
    root = next(r for r in rotation.roles if r.name == "root")
    assert ("threshold", 2, 1) in {(c.field, c.old, c.new) for c in root.changes}
    added = {e.version: [t.path for t in e.changes.targets] for e in h.targets if e.changes}
    assert added == {
        2: ["edge-gw/1.0/full.img.zst"],
        3: ["edge-gw/2.0/full.img.zst"],
        4: [],  # the rotation re-signed targets under the new keys
        5: ["edge-gw/2.0/full.img.zst"],  # withdrawn
    }
    assert [e.report.root_version for e in h.targets if e.report] == [1, 1, 1, 2, 2]


def test_cross_version_findings_fire_on_the_story(story: Story) -> None:
    found = {(f.id, f.where) for f in find_history(history(story))}
    assert found == {("OTA-H001", "root v2"), ("OTA-H002", "targets v5")}


def test_cross_version_findings_stay_quiet_before_the_rotation(story: Story) -> None:
    h = history(story, story.before_rotation)
    assert h.verified and [e.version for e in h.roots] == [1]
    assert find_history(h) == ()


def test_a_pruned_version_is_listed_as_not_kept(story: Story, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(story.repo, repo)
    (repo / "metadata" / "2.targets.json").unlink()
    h = history(story, repo)
    assert [e.version for e in h.targets] == [1, 3, 4, 5] and h.targets_not_kept == (2,)
    assert h.targets[1].changes is not None  # v3 compared with v1, the previous one held
    assert h.verified


def test_a_forged_targets_version_is_a_failure_of_that_version(
    story: Story, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(story.repo, repo)
    f = repo / "metadata" / "2.targets.json"
    md = Metadata.from_bytes(f.read_bytes())
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())
    f.write_bytes(md.to_bytes())
    h = history(story, repo)
    assert not h.verified and h.current.verified
    assert [e.version for e in h.targets if not e.verified] == [2]
    code, out, err = otakit(capsys, "inspect", "history", str(repo), "--root", str(story.root))
    assert code == 3 and "0/1 INVALID" in out and "FAILURE targets" in out
    assert "does NOT verify" in err
    assert "Traceback" not in out + err


def test_the_command_text_and_json(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("inspect", "history", str(story.repo), "--root", str(story.root))
    code, out, err = otakit(capsys, *argv, "--at", NOW.isoformat())
    assert code == 0, err
    assert "Root versions" in out and "Targets versions" in out and "OTA-H001" in out
    assert "- edge-gw/2.0/full.img.zst" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, _ = otakit(capsys, *argv, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["otakit_inspect_history"] == 1 and doc["verified"] is True
    assert [t["version"] for t in doc["targets"]] == [1, 2, 3, 4, 5]
    assert doc["roots"][1]["signatures"]["threshold"] == 1
    assert {f["id"] for f in doc["findings"]} == {"OTA-H001", "OTA-H002"}
    assert json.loads(json.dumps(history_json(history(story)))) == history_json(history(story))
    assert otakit(capsys, *argv, "--fail-on", "high")[0] == 3  # OTA-H001 is high
    assert otakit(capsys, "inspect", "history", str(story.repo), "--root", "/nowhere")[0] == 5


# --- each rule, by hand: fires, and a near miss that stays quiet -------------------------------


def _targets_history(*listings: tuple[object, ...]) -> History:
    """A history of targets versions 1..N listing the given targets (reports by hand)."""
    from repo.inspect_diff import diff_reports

    entries: list[VersionEntry] = []
    for v, listed in enumerate(listings, 1):
        roles = tuple(replace(r, version=v) if r.name == "targets" else r for r in CLEAN.roles)
        rep = replace(CLEAN, targets=listed, roles=roles)  # type: ignore[arg-type]
        prev = entries[-1].report if entries else None
        entries.append(
            VersionEntry("targets", v, rep, None, diff_reports(prev, rep) if prev else None)
        )
    return History("t", CLEAN.at, CLEAN, (), tuple(entries), ())


REUSED = target("edge-gw/2.0/full.img.zst", art("2.0", image=ImageRef(2000, "9" * 64)))
DOWNGRADE_OK = target("edge-gw/2.0/full.img.zst", art("2.0", allow_downgrade=True))

CASES = {
    "OTA-H002": (
        _targets_history((FULL1, FULL2), (FULL1,)),
        _targets_history((FULL1,), (FULL1, FULL2), (FULL2,)),  # 1.0 removed, newest unchanged
    ),
    "OTA-H003": (
        _targets_history((FULL1, FULL2), (FULL1, REUSED)),
        _targets_history((FULL1, FULL2), (FULL1, DOWNGRADE_OK)),  # same image, other flags
    ),
}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_a_rule_fires_and_stays_quiet_on_its_near_miss(rule_id: str) -> None:
    fires, quiet = CASES[rule_id]
    assert rule_id in {f.id for f in find_history(fires)}
    assert rule_id not in {f.id for f in find_history(quiet)}


def test_raising_a_threshold_is_not_h001(story: Story) -> None:
    """OTA-H001's near miss: the same rotation read backwards raises the threshold."""
    h = history(story)
    rotation = h.roots[1].changes
    assert rotation is not None
    from repo.inspect_diff import diff_reports

    backwards = replace(h.roots[1], changes=diff_reports(rotation.new, rotation.old))
    quiet = replace(h, roots=(h.roots[0], backwards), targets=())
    assert "OTA-H001" not in {f.id for f in find_history(quiet)}


def test_every_history_rule_has_a_case() -> None:
    assert {r.id for r in HISTORY_RULES} == {*CASES, "OTA-H001"}
