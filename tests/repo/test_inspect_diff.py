"""``otakit inspect diff``: two states of real repositories (built with the publisher),
compared from a pinned root — a release, a key rotation, a withdrawn target, over nginx —
and every bad STATE argument and forged side pointed out, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from repo.errors import RepositoryStateError
from repo.inspect_diff import diff_json, diff_reports
from repo.inspect_report import InspectReport, Pick, build_report
from repo.keys import KeyConfig, load_key_config
from repo.nginx import nginx_serving
from repo.publish import SignedRelease, publish
from repo.repository import Expiries, load_role_signers, next_targets, stage_chain
from repo.rotate import rotate_root
from repo.signing import sign_chain
from repo.sources import LocalSource, parse_state
from repo.state import load_state
from signer.keygen import generate_demo_keys, generate_key_set
from signer.release import release
from tests.helpers_repo import NOW
from tests.repo.test_repo_demo_keys import random_key
from verifier.cli_contract import run_app
from verifier.errors import OtakitError, UsageError

ONLINE = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Story:
    """One repository through its life, and a copy of it as it was before the rotation.

    targets v1 init, v2 edge-gw 1.0, v3 edge-gw 2.0, v4 the rotation's re-signing (root v2:
    every key new, root threshold 2 -> 1), v5 edge-gw 2.0 withdrawn."""

    repo: Path
    before_rotation: Path
    root: Path
    old_keys: KeyConfig
    new_keys: KeyConfig


def withdraw(repo: Path, keys: KeyConfig, path: str) -> None:
    """Publish a targets version without ``path`` (the publisher has no command for it yet;
    this is what a holder of the targets key can sign)."""
    state = load_state(repo)
    exp = Expiries()
    targets = next_targets(state, NOW, exp)
    del targets.targets[path]
    signers = load_role_signers(keys, ONLINE)
    chain = sign_chain(stage_chain(state, targets, NOW, exp), signers, [state.root.signed])
    publish(repo, SignedRelease((), chain.targets, chain.snapshot, chain.timestamp))


def _lower_root_threshold(conf: Path) -> KeyConfig:
    doc = json.loads(conf.read_text())
    doc["roles"]["root"]["threshold"] = 1
    conf.write_text(json.dumps(doc))
    return load_key_config(conf)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return build_story(tmp_path_factory.mktemp("story"))


def build_story(d: Path) -> Story:
    keys = generate_demo_keys(d / "keys")
    repo = d / "repo"
    from repo.repository import init

    init(repo, keys, NOW)
    v1 = d / "v1.img"
    v1.write_bytes(os.urandom(256 << 10))
    v2 = d / "v2.img"
    v2.write_bytes(v1.read_bytes() + os.urandom(16 << 10))
    for version, image in (("1.0", v1), ("2.0", v2)):
        release(repo, keys, "edge-gw", version, image, ["board"], NOW, image_type="raw")
    before = d / "before-rotation"
    shutil.copytree(repo, before)
    generate_key_set(d / "new", random_key)
    new_keys = _lower_root_threshold(d / "new" / "keys.json")
    everything = ("root", *ONLINE)
    rotate_root(
        repo,
        new_keys,
        NOW,
        old_signers=load_role_signers(keys, everything),
        new_signers=load_role_signers(new_keys, everything),
    )
    withdraw(repo, new_keys, "edge-gw/2.0/full.img.zst")
    return Story(repo, before, repo / "metadata" / "1.root.json", keys, new_keys)


def report(story: Story, text: str) -> InspectReport:
    src, pick = parse_state(text)
    return build_report(src, story.root.read_bytes(), NOW, source_name=text, pick=pick)


def test_the_story_is_what_the_fixture_says(story: Story) -> None:
    names = sorted(p.name for p in (story.repo / "metadata").glob("*.targets.json"))
    assert names == [f"{v}.targets.json" for v in range(1, 6)]
    assert (story.repo / "metadata" / "2.root.json").is_file()


# --- what changed -----------------------------------------------------------------------------


def test_a_release_diff_shows_the_target_added(story: Story) -> None:
    d = diff_reports(
        report(story, f"{story.repo}@targets:2"), report(story, f"{story.repo}@targets:3")
    )
    assert d.verified
    assert [(t.path, t.status) for t in d.targets] == [("edge-gw/2.0/full.img.zst", "added")]
    added = d.targets[0].target.artifact
    assert added is not None and (added.product, str(added.version)) == ("edge-gw", "2.0")
    assert [r.name for r in d.roles] == ["targets"]  # its version and expiry, nothing else
    assert {c.field for c in d.roles[0].changes} <= {"version", "expires"}
    assert d.keys_added == d.keys_removed == () and d.repository == ()


def test_a_rotation_diff_shows_keys_and_thresholds(story: Story) -> None:
    d = diff_reports(report(story, f"{story.repo}@root:1"), report(story, f"{story.repo}@root:2"))
    assert d.verified
    roles = {r.name: r for r in d.roles}
    assert set(roles) == {"root", "timestamp", "snapshot", "targets"}
    root = roles["root"]
    assert ("threshold", 2, 1) in {(c.field, c.old, c.new) for c in root.changes}
    old_ids = set(story.old_keys.role("root").keyids)
    assert set(root.keys_removed) == old_ids and len(root.keys_added) == 2
    assert all(k.demo for k in d.keys_removed) and not any(k.demo for k in d.keys_added)
    assert ("root_version", 1, 2) in {(c.field, c.old, c.new) for c in d.repository}


def test_a_withdrawn_target_shows_as_removed(story: Story) -> None:
    d = diff_reports(report(story, f"{story.repo}@targets:4"), report(story, str(story.repo)))
    assert [(t.path, t.status) for t in d.targets] == [("edge-gw/2.0/full.img.zst", "removed")]
    assert d.verified


def test_targets_signed_before_a_rotation_verify_under_the_root_of_their_time(
    story: Story,
) -> None:
    old = report(story, f"{story.repo}@targets:3")
    assert old.verified and old.root_version == 1 and old.role("root").threshold == 2
    new = report(story, f"{story.repo}@targets:4")  # bridged: signed by old and new keys
    assert new.verified and new.root_version == 2
    d = diff_reports(old, new)
    assert d.targets == () and {r.name for r in d.roles} >= {"root", "targets"}


def test_a_changed_target_lists_each_field(story: Story) -> None:
    """The same path with other content (hand-edited, re-signed by the targets key)."""
    from dataclasses import replace

    base = report(story, f"{story.repo}@targets:3")
    t = next(x for x in base.targets if x.path == "edge-gw/2.0/full.img.zst")
    assert t.artifact is not None
    art = replace(t.artifact, allow_downgrade=True, image_type="ext4")
    edited = replace(
        base,
        targets=tuple(replace(x, artifact=art, length=1) if x is t else x for x in base.targets),
    )
    d = diff_reports(base, edited)
    assert [x.status for x in d.targets] == ["changed"]
    assert {c.field for c in d.targets[0].changes} == {"length", "allow_downgrade", "image_type"}
    assert diff_reports(base, base).changed is False


def test_the_json_document_is_versioned_plain_json(story: Story) -> None:
    d = diff_reports(report(story, f"{story.repo}@root:1"), report(story, str(story.repo)))
    doc = diff_json(d)
    assert doc["otakit_inspect_diff"] == 1 and doc["verified"] is True and doc["changed"]
    assert doc["old"]["state"] == "root:1" and doc["new"]["state"] == "current"
    assert json.loads(json.dumps(doc)) == doc
    # root:1 is the root alone: every target of the current state is new to it
    assert [(t["path"], t["status"]) for t in doc["targets"]] == [
        ("edge-gw/1.0/full.img.zst", "added")
    ]


def test_over_nginx_the_diff_is_the_directorys(
    story: Story, tmp_path: Path, require_tool: object
) -> None:
    nginx = require_tool("nginx")  # type: ignore[operator]
    local = diff_json(
        diff_reports(
            report(story, f"{story.repo}@root:1"), report(story, f"{story.repo}@targets:5")
        )
    )
    with nginx_serving(nginx, story.repo, tmp_path / "nginx") as url:
        remote = diff_json(
            diff_reports(report(story, f"{url}@root:1"), report(story, f"{url}@targets:5"))
        )
    for doc in (local, remote):
        for side in ("old", "new"):
            doc[side].pop("source")
    assert remote == local


# --- STATE arguments --------------------------------------------------------------------------

BAD_STATES = [
    ("@targets:x", UsageError, "expected a version number"),
    ("@targets:0", UsageError, "expected a version number"),
    ("@targets:-1", UsageError, "expected a version number"),
    ("@targets:..", UsageError, "expected a version number"),
    ("@targets:../../etc/passwd", UsageError, "expected a version number"),
    ("@nope:1", UsageError, "ROLE one of root"),
    ("@targets:9", UsageError, "expected metadata/9.targets.json, found none"),
    ("@snapshot:77", UsageError, "expected metadata/77.snapshot.json"),
    ("@root:3", UsageError, "expected metadata/3.root.json"),
    ("@timestamp:1", UsageError, "only the current timestamp"),
]


@pytest.mark.parametrize(("suffix", "error", "says"), BAD_STATES, ids=[b[0] for b in BAD_STATES])
def test_a_bad_state_is_a_clear_usage_error(
    story: Story, suffix: str, error: type[OtakitError], says: str
) -> None:
    with pytest.raises(error, match=says.replace(".", r"\.").replace("(", r"\(")):
        report(story, f"{story.repo}{suffix}")


def test_state_parsing_keeps_urls_and_plain_paths() -> None:
    src, pick = parse_state("http://user@host:8080/repo")
    assert pick is None and str(src) == "http://user@host:8080/repo"
    src, pick = parse_state("https://cdn.example/r@targets:12")
    assert pick == Pick("targets", 12) and str(src) == "https://cdn.example/r"
    with pytest.raises(RepositoryStateError, match="nothing there"):
        parse_state("/nowhere@targets:3")


def test_a_past_version_needs_versioned_files(story: Story, tmp_path: Path) -> None:
    """Without consistent snapshots the repository keeps no N.targets.json: the error says
    which file was expected and why there is none."""
    repo = tmp_path / "repo"
    shutil.copytree(story.before_rotation, repo)
    signer = load_role_signers(story.old_keys, ("root",))["root"]
    md = Metadata.from_bytes((repo / "metadata" / "1.root.json").read_bytes())
    md.signed.version, md.signed.consistent_snapshot = 2, False
    md.signatures.clear()
    for s in signer:
        md.sign(s, append=True)
    (repo / "metadata" / "2.root.json").write_bytes(md.to_bytes())
    with pytest.raises(UsageError, match="consistent snapshots are off") as e:
        build_report(LocalSource(repo), story.root.read_bytes(), NOW, pick=Pick("targets", 9))
    assert "9.targets.json" in e.value.message


# --- a side that does not verify --------------------------------------------------------------


def _forged_copy(story: Story, dest: Path) -> Path:
    shutil.copytree(story.before_rotation, dest)
    f = dest / "metadata" / "3.targets.json"
    md = Metadata.from_bytes(f.read_bytes())
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())
    f.write_bytes(md.to_bytes())
    return dest


def test_a_forged_side_is_a_failure_in_the_diff(story: Story, tmp_path: Path) -> None:
    forged = _forged_copy(story, tmp_path / "forged")
    d = diff_reports(
        report(story, f"{story.before_rotation}@targets:3"), report(story, f"{forged}@targets:3")
    )
    assert not d.verified and d.old.verified and not d.new.verified
    assert [(f.where, f.kind) for f in d.new.failures] == [("targets", "metadata-signature")]


def otakit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    import signer.cli

    code = run_app(signer.cli.app, "otakit", list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_renders_and_exits_by_verdict(
    story: Story, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, at = ("--root", str(story.root)), ("--at", NOW.isoformat())
    r = str(story.repo)
    code, out, err = otakit(capsys, "inspect", "diff", f"{r}@root:1", f"{r}@root:2", *root, *at)
    assert code == 0, err
    assert "threshold 2 -> 1" in out and "+ key" in out and "- key" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert err.count("demo keys") == 1  # one repository, warned once
    code, out, _ = otakit(
        capsys, "inspect", "diff", f"{r}@targets:2", f"{r}@targets:3", *root, *at, "--json"
    )
    doc = json.loads(out)
    assert code == 0 and [t["path"] for t in doc["targets"]] == ["edge-gw/2.0/full.img.zst"]
    assert doc["warnings"]
    forged = _forged_copy(story, tmp_path / "forged")
    old = f"{story.before_rotation}@targets:3"
    code, out, err = otakit(capsys, "inspect", "diff", old, str(forged), *root, *at)
    assert code == 3 and "NOT VERIFIED" in out and "does NOT verify" in err
    assert "Traceback" not in out + err
    code, out, _ = otakit(capsys, "--json", "inspect", "diff", old, str(forged), *root, *at)
    assert code == 3 and json.loads(out)["new"]["failures"][0]["where"] == "targets"
    code, _, err = otakit(capsys, "inspect", "diff", f"{r}@targets:x", r, *root)
    assert code == 2 and "expected a version number" in err


def test_the_short_form_and_show_are_one_command(
    story: Story, capsys: pytest.CaptureFixture[str]
) -> None:
    root, at = ("--root", str(story.root)), ("--at", NOW.isoformat())
    short = otakit(capsys, "inspect", str(story.repo), *root, *at, "--json")
    long = otakit(capsys, "inspect", "show", str(story.repo), *root, *at, "--json")
    first = otakit(capsys, "inspect", "--json", str(story.repo), *root, *at)
    assert short[0] == long[0] == first[0] == 0
    assert json.loads(short[1]) == json.loads(long[1]) == json.loads(first[1])
    code, out, _ = otakit(capsys, "inspect", f"{story.repo}@targets:3", *root, *at, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["state"] == "targets:3" and doc["root_version"] == 1
