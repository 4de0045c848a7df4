"""Ceremonies: stage → sign (each holder, own key file) → publish, and every refusal.

Scenarios: signing adds one signature and nothing else (byte comparison of ``signed``), is
idempotent and refuses a key listed nowhere; a targets re-sign and a targets-key rotation
(root-first and bridged) followed by clients pinned to root 1; publish refused below
threshold, with a forged or a foreign signature, with one key under two ids, when stale; a
crash at every write of a publication leaves the previous repository valid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, TargetFile

from repo.ceremony import (
    approve,
    publish_file,
    read_staged,
    sign_file,
    stage_file,
    stage_targets,
    status_file,
)
from repo.errors import (
    PublishError,
    StagedChangeError,
    StagedSignatureError,
    StaleChangeError,
    ThresholdError,
    UntrustedRepositoryError,
    UsageError,
)
from repo.keys import KeyConfig
from repo.repository import Expiries, load_role_signers, open_transaction
from repo.staged import from_json
from repo.state import load_state
from tests.helpers_repo import LIVE_CONTENT, LIVE_PATH, client_view, make_updater, root_bytes
from tests.helpers_repo import NOW as T0
from tests.helpers_repo import publisher_cli as _run
from tests.repo.test_repo_publish import FailingDisk
from tests.repo.test_repo_rotate import _doc, mix, other_keys

__all__ = ["other_keys"]
EXPECTED = {LIVE_PATH: LIVE_CONTENT}


def uri(conf: KeyConfig, role: str, i: int = 0) -> str:
    return conf.role(role).keys[i].uri


def files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "metadata").iterdir())}


def raw(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def rekeyed(keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path) -> KeyConfig:
    """The live key set with the targets key replaced (a targets-key rotation)."""
    return mix(keys, tmp_path / "rekeyed" / "keys.json", targets=_doc(other_keys, "targets"))


def test_signing_adds_a_signature_and_nothing_else(
    live: Path, keys: KeyConfig, tmp_path: Path, rekeyed: KeyConfig
) -> None:
    staged = tmp_path / "change.json"
    stage_file(live, "root", staged, T0, keys=rekeyed)
    before = raw(staged)
    assert [d["signatures"] for d in before["documents"]] == [[], []]
    for key in (uri(keys, "root", 0), uri(rekeyed, "targets"), uri(keys, "targets")):
        sign_file(staged, key)
    after = raw(staged)
    for b, a in zip(before["documents"], after["documents"], strict=True):
        assert encode_canonical(a["signed"]) == encode_canonical(b["signed"])  # signed bytes
        assert json.dumps(a["signed"], sort_keys=True) == json.dumps(b["signed"], sort_keys=True)
    strip = [{**before, "documents": [{**d, "signatures": []} for d in x["documents"]]}
             for x in (before, after)]  # fmt: skip
    assert strip[0] == strip[1]  # nothing else in the envelope moved either
    root_sigs = [s["keyid"] for s in after["documents"][0]["signatures"]]
    targets_sigs = {s["keyid"] for s in after["documents"][1]["signatures"]}
    assert root_sigs == [keys.role("root").keys[0].keyid]
    assert targets_sigs == rekeyed.role("targets").keyids | keys.role("targets").keyids


def test_signing_is_idempotent_and_refuses_a_key_listed_for_nothing(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    staged = tmp_path / "change.json"
    stage_file(live, "targets", staged, T0)
    first = sign_file(staged, uri(keys, "targets"))
    assert first.signed == ("targets v3",)
    once = staged.read_bytes()
    again = sign_file(staged, uri(keys, "targets"))
    assert (again.signed, again.already) == ((), ("targets v3",))
    assert staged.read_bytes() == once
    with pytest.raises(StagedChangeError, match=r"listed for none of the documents.*it holds key"):
        sign_file(staged, uri(keys, "snapshot"))  # a real key, but not a targets key
    assert staged.read_bytes() == once


def test_a_targets_change_is_staged_signed_and_followed_by_clients(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    seen = tmp_path / "seen"
    client_view(live, seen, pinned)
    staged = tmp_path / "targets.json"
    stage_file(live, "targets", staged, T0, expiries=Expiries(targets=Expiries().targets * 2))
    assert not status_file(staged).ready
    with pytest.raises(ThresholdError, match=r"targets v3: expected 1 signature.*found 0"):
        publish_file(staged, live, [keys], T0)
    sign_file(staged, uri(keys, "targets"))
    assert status_file(staged, live).ready
    result = publish_file(staged, live, [keys], T0)
    assert result.written == ("3.targets.json", "3.snapshot.json", "timestamp.json")
    st = load_state(live)
    assert st.targets.signed.expires == (T0 + Expiries().targets * 2).replace(microsecond=0)
    make_updater(live, seen, pinned).refresh()
    assert client_view(live, tmp_path / "fresh", pinned) == EXPECTED
    with pytest.raises(StaleChangeError, match="staged against targets v2"):
        publish_file(staged, live, [keys], T0)  # published once: now stale


def test_stage_targets_edit_must_keep_the_version(live: Path) -> None:
    state = load_state(live)

    def bump(t: Any) -> Any:
        t.version += 1
        return t

    with pytest.raises(UsageError, match="keep version 3"):
        stage_targets(state, bump, T0, Expiries())
    change = stage_targets(state, lambda t: t, T0, Expiries())
    assert [d.signed.version for d in change.documents] == [3]


@pytest.mark.parametrize("bridge", [False, True], ids=["root-first", "bridged"])
def test_a_targets_key_rotation_through_a_ceremony(
    live: Path, keys: KeyConfig, rekeyed: KeyConfig, tmp_path: Path, bridge: bool
) -> None:
    pinned = root_bytes(live)
    seen = tmp_path / "seen"
    client_view(live, seen, pinned)
    staged = tmp_path / "rotate.json"
    stage_file(live, "root", staged, T0, keys=rekeyed)
    status = status_file(staged, live)
    needs = [(d.role, a.authority, a.required, a.threshold) for d in status.documents
             for a in d.authorities]  # fmt: skip
    assert needs == [
        ("root", "root v1", True, 2), ("root", "root v2", True, 2),
        ("targets", "root v2", True, 1), ("targets", "root v1", False, 1),
    ]  # fmt: skip
    holders = [uri(keys, "root", 0), uri(keys, "root", 1), uri(rekeyed, "targets")]
    for key in holders + ([uri(keys, "targets")] if bridge else []):
        sign_file(staged, key)
    assert status_file(staged, live).ready
    result = publish_file(staged, live, [rekeyed], T0)
    assert result.bridged is bridge
    first = ("2.root.json", "root.json")
    chain = ("3.targets.json", "3.snapshot.json", "timestamp.json")
    assert result.written == (chain + first if bridge else first + chain)
    assert result.to_json()["roles"]["targets"]["revoked"] == sorted(keys.role("targets").keyids)
    make_updater(live, seen, pinned).refresh()
    assert client_view(live, tmp_path / "fresh", pinned) == EXPECTED
    # a release afterwards is signed by the new targets key only
    src = tmp_path / "b.src"
    src.write_bytes(b"release B")
    with open_transaction(live) as tx:
        tx.add_target(TargetFile.from_data("prod/2/b.img", b"release B", ["sha256"]), src)
        tx.commit(load_role_signers(rekeyed, ("targets", "snapshot", "timestamp")), T0)
    got = client_view(live, tmp_path / "after", pinned)
    assert got["prod/2/b.img"] == b"release B"


def test_publish_is_refused_below_any_required_threshold(
    live: Path, keys: KeyConfig, rekeyed: KeyConfig, tmp_path: Path
) -> None:
    before = files(live)
    staged = tmp_path / "rotate.json"
    stage_file(live, "root", staged, T0, keys=rekeyed)
    sign_file(staged, uri(keys, "root", 0))
    sign_file(staged, uri(rekeyed, "targets"))
    with pytest.raises(ThresholdError, match=r"root v2: expected 2 signature\(s\) from root v1"):
        publish_file(staged, live, [rekeyed], T0)
    sign_file(staged, uri(keys, "root", 1))
    staged2 = tmp_path / "rotate2.json"
    shutil.copy(staged, staged2)
    doc = raw(staged2)
    doc["documents"][1]["signatures"] = []  # targets v3 unsigned by the new targets key
    staged2.write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match=r"targets v3: expected 1 signature\(s\) from root v2"):
        publish_file(staged2, live, [rekeyed], T0)
    assert files(live) == before


def _forge(staged: Path, index: int, keyid: str, signer: CryptoSigner) -> None:
    doc = raw(staged)
    md = Metadata.from_dict(json.loads(json.dumps(doc["documents"][index])))
    sig = signer.sign(md.signed_bytes).to_dict()
    sig["keyid"] = keyid
    sigs = [s for s in doc["documents"][index]["signatures"] if s["keyid"] != keyid]
    doc["documents"][index]["signatures"] = [*sigs, sig]
    staged.write_text(json.dumps(doc))


def test_publish_is_refused_with_a_forged_or_a_foreign_signature(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = files(live)
    staged = tmp_path / "targets.json"
    stage_file(live, "targets", staged, T0)
    intruder = CryptoSigner.generate_ed25519()
    forged = tmp_path / "forged.json"
    shutil.copy(staged, forged)
    _forge(forged, 0, keys.role("targets").keys[0].keyid, intruder)  # claims the targets key
    assert status_file(forged).documents[0].invalid == (keys.role("targets").keys[0].keyid,)
    with pytest.raises(StagedSignatureError, match="do not verify"):
        publish_file(forged, live, [keys], T0)
    foreign = tmp_path / "foreign.json"
    shutil.copy(staged, foreign)
    sign_file(foreign, uri(keys, "targets"))  # the threshold is met ...
    _forge(foreign, 0, intruder.public_key.keyid, intruder)  # ... plus a stranger's signature
    with pytest.raises(StagedSignatureError, match="come from keys not listed for it"):
        publish_file(foreign, live, [keys], T0)
    assert files(live) == before


def test_publish_is_refused_when_a_staged_root_lists_one_key_under_two_ids(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """Threshold 2 'met' by one key listed twice: the device's precheck refuses it."""
    before = files(live)
    staged = tmp_path / "root.json"
    stage_file(live, "root", staged, T0, keys=keys)
    doc = raw(staged)
    signed = doc["documents"][0]["signed"]
    key1 = keys.role("root").keys[0]
    alias = "ab" * 32
    signed["keys"][alias] = signed["keys"][key1.keyid]
    signed["roles"]["root"]["keyids"] = [key1.keyid, alias]
    staged.write_text(json.dumps(doc))
    for key in (uri(keys, "root", 0), uri(keys, "root", 1)):
        sign_file(staged, key)
    sig = next(s for s in raw(staged)["documents"][0]["signatures"] if s["keyid"] == key1.keyid)
    doc = raw(staged)
    doc["documents"][0]["signatures"].append({**sig, "keyid": alias})
    staged.write_text(json.dumps(doc))
    problems = status_file(staged).problems
    assert problems and "listed under two key ids" in problems[0]
    with pytest.raises(StagedSignatureError, match="one public key is listed under two key ids"):
        publish_file(staged, live, [keys], T0)
    assert files(live) == before


def test_a_stale_staged_change_is_refused(live: Path, keys: KeyConfig, tmp_path: Path) -> None:
    staged = tmp_path / "targets.json"
    stage_file(live, "targets", staged, T0)
    sign_file(staged, uri(keys, "targets"))
    src = tmp_path / "b.src"
    src.write_bytes(b"release B")
    with open_transaction(live) as tx:  # someone releases meanwhile
        tx.add_target(TargetFile.from_data("prod/2/b.img", b"release B", ["sha256"]), src)
        tx.commit(load_role_signers(keys, ("targets", "snapshot", "timestamp")), T0)
    before = files(live)
    with pytest.raises(StaleChangeError, match="staged against targets v2") as refused:
        publish_file(staged, live, [keys], T0)
    assert "stage the change again" in refused.value.diagnostic()
    assert any("staged against" in p for p in status_file(staged, live).problems)
    assert files(live) == before
    # an approval obtained before the state moved cannot be published either
    with pytest.raises(StaleChangeError):
        approve(read_staged(staged), load_state(live))


def test_a_malformed_staged_file_is_a_usage_error(live: Path, tmp_path: Path) -> None:
    staged = tmp_path / "targets.json"
    stage_file(live, "targets", staged, T0)
    good = raw(staged)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "otakit_staged": 3}, "expected a staged change"),
        ({**good, "otakit_staged": 2, "delegated": []}, "only it carries"),
        ({**good, "extra": 1}, "unexpected fields"),
        ({**good, "change": "snapshot"}, "'change'"),
        ({**good, "documents": [good["documents"][0]] * 2}, "publication order"),
        ({**good, "base": {**good["base"], "targets": {"version": 5, "sha256": "a" * 64}}},
         "expected version 6"),
    ]  # fmt: skip
    for doc, says in cases:
        with pytest.raises(StagedChangeError, match=says):
            from_json(doc, "t")
    with pytest.raises(UsageError, match="already exists"):
        stage_file(live, "targets", staged, T0)


@pytest.mark.parametrize("change", ["targets", "root-bridged"])
def test_a_crash_at_any_write_of_publish_leaves_the_previous_repository_valid(
    live: Path, keys: KeyConfig, rekeyed: KeyConfig, tmp_path: Path, change: str
) -> None:
    pinned = root_bytes(live)
    staged = tmp_path / "change.json"
    if change == "targets":
        stage_file(live, "targets", staged, T0)
        holders, online = [uri(keys, "targets")], [keys]
    else:
        stage_file(live, "root", staged, T0, keys=rekeyed)
        holders = [uri(keys, "root", 0), uri(keys, "root", 1), uri(rekeyed, "targets"),
                   uri(keys, "targets")]  # fmt: skip
        online = [rekeyed]
    for key in holders:
        sign_file(staged, key)
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(live, probe)
    publish_file(staged, probe, online, T0, disk=counting)
    total = len(counting.effects)
    assert total >= (12 if change == "targets" else 15), counting.effects
    seen = tmp_path / "seen"
    client_view(live, seen, pinned)
    for k in range(total):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(live, work)
        with pytest.raises(PublishError):
            publish_file(staged, work, online, T0, disk=FailingDisk(k))
        what = counting.effects[k]
        assert client_view(work, tmp_path / f"fresh-{k}", pinned) == EXPECTED, what
        cont = tmp_path / f"cont-{k}"
        shutil.copytree(seen, cont)
        make_updater(work, cont, pinned).refresh()
        st = load_state(work)
        landed = (
            st.root.signed.version == 2 if change != "targets" else st.targets.signed.version == 3
        )
        if landed:
            with pytest.raises(StaleChangeError):  # done: a rerun is refused, not repeated
                publish_file(staged, work, online, T0)
        else:  # the change did not land (or only its bridged part): the rerun finishes it
            publish_file(staged, work, online, T0)
            st = load_state(work)
            assert st.targets.signed.version == 3, what
            assert st.root.signed.version == (1 if change == "targets" else 2), what
        assert client_view(work, tmp_path / f"rerun-{k}", pinned) == EXPECTED, what


# --- command line ------------------------------------------------------------------------------


def test_cli_stage_sign_status_publish(
    live: Path, keys: KeyConfig, rekeyed: KeyConfig, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    staged = str(tmp_path / "rotate.json")
    code, out, err = _run(
        capsys, "repo", "stage", str(live), "root", "--keys", str(rekeyed.source),
        "--expires-in", "30", "--out", staged, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["documents"] == ["root v2", "targets v3"]
    code, out, err = _run(capsys, "repo", "sign-status", staged)
    assert code == 0 and "not ready to publish" in out and "0 of 2 NOT met" in out
    code, out, err = _run(capsys, "repo", "publish", staged, str(live), "--keys",
                          str(rekeyed.source))  # fmt: skip
    assert code == 3 and "expected 2 signature(s) from root v1" in err and out == ""
    for key in (uri(keys, "root", 0), uri(keys, "root", 1), uri(rekeyed, "targets")):
        code, out, err = _run(capsys, "repo", "sign", staged, "--key", key, "--json")
        assert code == 0, err
    assert json.loads(out)["signed"] == ["targets v3"]
    code, out, err = _run(capsys, "repo", "sign", staged, "--key", uri(keys, "snapshot"))
    assert code == 2 and "listed for none" in err
    code, out, err = _run(capsys, "repo", "sign-status", staged, "--repo", str(live), "--json")
    assert code == 0 and json.loads(out)["ready"] is True
    code, out, err = _run(capsys, "repo", "publish", staged, str(live), "--keys",
                          str(rekeyed.source), "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["versions"] == {"root": 2, "targets": 3, "snapshot": 3, "timestamp": 3}
    assert doc["bridged"] is False and doc["warnings"]
    assert load_state(live).root.signed.expires.date() == (T0 + Expiries().root / 365 * 30).date()


def test_only_a_signed_change_type_checks_as_publishable(tmp_path: Path) -> None:
    """STYLE.md §6: handing publish a StagedChange is a type error, not a runtime surprise."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from datetime import UTC, datetime\n"
        "from pathlib import Path\n"
        "from repo.ceremony import approve, publish_change, read_staged\n"
        "from repo.state import load_state\n"
        "staged = read_staged(Path('s'))\n"
        "publish_change(Path('r'), approve(staged, load_state(Path('r'))), {}, datetime.now(UTC))\n"
        "publish_change(Path('r'), staged, {}, datetime.now(UTC))\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         str(snippet)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    errors = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    assert len(errors) == 1, proc.stdout
    assert 'snippet.py:7: error: Argument 2 to "publish_change" has incompatible type' in errors[0]
    assert '"StagedChange"; expected "SignedChange"' in errors[0]


def test_a_root_first_publication_interrupted_after_its_root_is_finished_with_resume(
    live: Path, keys: KeyConfig, rekeyed: KeyConfig, tmp_path: Path
) -> None:
    """The old targets key did not sign (lost or stolen): root N+1 goes first; a crash right
    after it leaves devices failing until ``--resume`` finishes this very change."""
    pinned = root_bytes(live)
    staged = tmp_path / "rotate.json"
    stage_file(live, "root", staged, T0, keys=rekeyed)
    for key in (uri(keys, "root", 0), uri(keys, "root", 1), uri(rekeyed, "targets")):
        sign_file(staged, key)
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(live, probe)
    assert publish_file(staged, probe, [rekeyed], T0, disk=counting).bridged is False
    root_done = counting.effects.index(
        "fsync dir metadata", counting.effects.index("rename root.json")
    )
    with pytest.raises(PublishError):
        publish_file(staged, live, [rekeyed], T0, disk=FailingDisk(root_done + 1))
    with pytest.raises(UntrustedRepositoryError) as refused:
        publish_file(staged, live, [rekeyed], T0)
    assert "--resume" in refused.value.diagnostic()
    other = tmp_path / "other.json"  # another change cannot ride on the interrupted one
    stage_file(probe, "targets", other, T0)
    with pytest.raises((StaleChangeError, UsageError)):
        publish_file(other, live, [rekeyed], T0, resume=True)
    result = publish_file(staged, live, [rekeyed], T0, resume=True)
    assert result.written == ("3.targets.json", "3.snapshot.json", "timestamp.json")
    assert "resumed" in result.warnings[0]
    assert client_view(live, tmp_path / "fresh", pinned) == EXPECTED
    assert load_state(live).root.signed.version == 2
