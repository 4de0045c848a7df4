"""``otakit rollout …`` at the repository: the published metadata carries exactly what each
command signed, on every target of the release; a rerun signs nothing; a refusal leaves the
repository as it was and valid; the gate signs only when the reports say so."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from repo.errors import RolloutRefusedError, UsageError
from repo.fleet_reports import report_file
from repo.keys import KeyConfig
from repo.repository import load_role_signers, open_transaction
from repo.roles import CHAIN_ROLES
from repo.rollout import Publisher, RolloutChange, advance, gate, halt, recall, resume, status
from repo.rollout_spec import parse_waves
from repo.state import load_state
from repo.withdraw import listed_artifacts, withdraw
from tests.helpers_repo import NOW, client_view, root_bytes
from verifier.artifact import ArtifactInfo, BaseRef, ImageRef, ImageVersion, target_path
from verifier.errors import NoSuchVersionError
from verifier.rollout import RolloutPolicy

P = "edge-gw"
SPEC = "5%@0,25%@24h,100%@3d"


def _image(version: str) -> ImageRef:
    return ImageRef(4096, hashlib.sha256(f"image {version}".encode()).hexdigest())


def _info(version: str, base: str | None, rollout: RolloutPolicy | None) -> ArtifactInfo:
    v = ImageVersion.parse(version)
    if base is None:
        return ArtifactInfo(P, ("rpi4",), v, "full", "zstd", _image(version), rollout=rollout)
    return ArtifactInfo(
        P, ("rpi4",), v, "delta", "otakit-delta", _image(version),
        BaseRef(ImageVersion.parse(base), _image(base)), ImageRef(64, "cd" * 32), rollout=rollout,
    )  # fmt: skip


def publish(
    repo: Path, keys: KeyConfig, version: str, bases: tuple[str, ...] = (), waves: str | None = None
) -> None:
    rollout = None if waves is None else parse_waves(waves, NOW)
    with open_transaction(repo) as tx:
        for info in (_info(version, None, rollout), *(_info(version, b, rollout) for b in bases)):
            data = f"artifact {target_path(info)} ".encode() * 100
            src = repo.parent / f"{target_path(info).replace('/', '_')}.src"
            src.write_bytes(data)
            tf = TargetFile.from_data(target_path(info), data, ["sha256"])
            tf.unrecognized_fields["custom"] = info.to_custom()
            tx.add_target(tf, src)
        tx.commit(load_role_signers(keys, CHAIN_ROLES), NOW)


@pytest.fixture
def fleet(repo: Path, keys: KeyConfig) -> Path:
    """1.0 without waves; 2.0 (full and a delta from 1.0) in waves SPEC from NOW."""
    publish(repo, keys, "1.0")
    publish(repo, keys, "2.0", ("1.0",), SPEC)
    return repo


def _pub(keys: KeyConfig) -> Publisher:
    return Publisher(keys, signers=load_role_signers(keys, CHAIN_ROLES))


def _published(repo: Path, version: str) -> list[ArtifactInfo]:
    return [
        a.info
        for a in listed_artifacts(load_state(repo).targets.signed)
        if str(a.info.version) == version
    ]


def _files(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "metadata").iterdir())


# --- each command signs exactly its edit, once ------------------------------------------------


def test_halt_resume_advance_recall_each_publish_what_they_signed(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pub = _pub(keys)
    steps: list[tuple[str, Callable[[], RolloutChange]]] = [
        ("halt", lambda: halt(fleet, P, "2.0", NOW, pub)),
        ("resume", lambda: resume(fleet, P, "2.0", NOW, pub)),
        ("advance", lambda: advance(fleet, P, "2.0", NOW, pub)),
        ("advance-to", lambda: advance(fleet, P, "2.0", NOW, pub, to_bp=10_000)),
        ("recall", lambda: recall(fleet, P, "2.0", "bricks rev-B", NOW, pub)),
    ]
    version = load_state(fleet).targets.signed.version
    for name, step in steps:
        r = step()
        assert not r.already and len(r.changed) == 2, name
        version += 1
        assert r.targets_version == version, name
        infos = _published(fleet, "2.0")
        assert len(infos) == 2 and {i.kind for i in infos} == {"full", "delta"}
        for i in infos:  # every target of the release carries the signed result
            assert (i.rollout, i.withdrawn) == (r.rollout, r.withdrawn), name
        client_view(fleet, tmp_path / f"client-{name}", root_bytes(fleet))  # still verifies
        files = _files(fleet)
        again = step() if name not in ("advance",) else None
        if again is not None:  # a rerun signs nothing and says so
            assert again.already and again.changed == () and _files(fleet) == files, name
    infos = _published(fleet, "2.0")
    assert infos[0].recalled and infos[0].rollout is not None
    assert infos[0].rollout.allowed_bp(NOW) == 10_000
    assert _published(fleet, "1.0")[0].rollout is None  # the other release is untouched


def test_halting_a_release_without_waves_gives_it_a_halted_policy(
    fleet: Path, keys: KeyConfig
) -> None:
    r = halt(fleet, P, "1.0", NOW, _pub(keys))
    info = _published(fleet, "1.0")[0]
    assert info.rollout == r.rollout and info.rollout is not None
    assert info.rollout.halted and info.rollout.start == NOW.replace(microsecond=0)
    assert info.to_custom()["otakit"]["schema"] == "3.0"
    s = status(fleet, P, "1.0", NOW)
    assert s.allowed_bp == 0 and s.to_json()["halted"] is True


def test_recall_upgrades_a_plain_withdrawal_and_the_first_reason_stands(
    fleet: Path, keys: KeyConfig
) -> None:
    withdraw(fleet, keys, P, "2.0", "first reason", NOW)
    r = recall(fleet, P, "2.0", "second reason", NOW, _pub(keys))
    assert not r.already and r.withdrawn is not None
    assert (r.withdrawn.reason, r.withdrawn.recall) == ("first reason", True)
    assert "that reason stands" in r.warnings[0]
    assert all(i.recalled for i in _published(fleet, "2.0"))


# --- refusals leave the repository as it was --------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r, p: advance(r, P, "1.0", NOW, p), RolloutRefusedError, "no rollout policy"),
        (lambda r, p: advance(r, P, "9.0", NOW, p), NoSuchVersionError, "expected a published"),
        (lambda r, p: halt(r, "other", "2.0", NOW, p), NoSuchVersionError, "published product"),
        (lambda r, p: recall(r, P, "2.0", "", NOW, p), UsageError, "--reason"),
        (lambda r, p: resume(r, P, "x.y", NOW, p), UsageError, "invalid image version"),
    ],
    ids=["advance-no-waves", "no-version", "no-product", "recall-no-reason", "bad-version"],
)
def test_a_refusal_signs_nothing_and_the_repository_stays_valid(
    fleet: Path, keys: KeyConfig, tmp_path: Path, call: object, error: type, match: str
) -> None:
    before = _files(fleet)
    with pytest.raises(error, match=match):
        call(fleet, _pub(keys))  # type: ignore[operator]
    assert _files(fleet) == before
    client_view(fleet, tmp_path / "c", root_bytes(fleet))


def test_a_recalled_release_cannot_be_resumed_and_nothing_is_signed(
    fleet: Path, keys: KeyConfig
) -> None:
    recall(fleet, P, "2.0", "bad", NOW, _pub(keys))
    before = _files(fleet)
    with pytest.raises(RolloutRefusedError, match="recalled") as e:
        resume(fleet, P, "2.0", NOW, _pub(keys))
    assert e.value.kind() == "rollout-refused" and _files(fleet) == before


def test_a_delegated_product_is_halted_and_recalled_with_its_own_key_alone(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """A release the product role lists is changed with the product key: no top-level
    targets key is loaded or needed (the rollout commands refused delegated products)."""
    from repo.delegation import DelegationSpec, delegate, product_view
    from repo.roles import ONLINE_ROLES
    from tests.helpers_delegation import product_keys

    pk = product_keys(tmp_path / "k", P, "a")
    signers = dict(load_role_signers(keys, ("targets", *ONLINE_ROLES)))
    signers[P] = load_role_signers(pk, (P,))[P]
    delegate(fleet, DelegationSpec(P, pk.role(P)), signers, NOW)
    rollout = parse_waves(SPEC, NOW)
    info = _info("3.0", None, rollout)
    data = b"artifact 3.0 " * 100
    src = tmp_path / "3.0.src"
    src.write_bytes(data)
    tf = TargetFile.from_data(target_path(info), data, ["sha256"])
    tf.unrecognized_fields["custom"] = info.to_custom()
    with open_transaction(fleet) as tx:
        tx.add_target(tf, src)
        tx.commit({**load_role_signers(keys, ONLINE_ROLES), P: signers[P]}, NOW)
    top_before = load_state(fleet).targets.signed.version
    online_only = KeyConfig(keys.source, {r: keys.roles[r] for r in ONLINE_ROLES})
    pub = Publisher(online_only, product_keys=pk)
    done = halt(fleet, P, "3.0", NOW, pub)
    assert done.changed == (target_path(info),) and not done.already
    st = load_state(fleet)
    assert st.targets.signed.version == top_before  # the top-level targets were not re-signed
    view = product_view(st, P)
    assert view is not None
    listed = ArtifactInfo.from_custom(view.all_targets()[target_path(info)].custom)
    assert listed.rollout is not None and listed.rollout.halted
    assert status(fleet, P, "3.0", NOW).rollout == listed.rollout
    recall(fleet, P, "3.0", "boot loop", NOW, pub)
    view = product_view(load_state(fleet), P)
    assert view is not None
    assert ArtifactInfo.from_custom(view.all_targets()[target_path(info)].custom).recalled


# --- status and the gate, from reports --------------------------------------------------------


def _report(device: str, running: str, *, failed: str | None = None, other: str = "1.0") -> bytes:
    return json.dumps(
        {
            "otakit_report": 1, "device_id": device, "at": "2026-12-02T05:00:00+00:00",
            "product": P, "hardware": "rpi4", "image_type": None,
            "running": {"slot": "a", "version": running, "committed": True},
            "slots": {"a": running, "b": other}, "pending": None, "last_cycle": None,
            "last_failure": None if failed is None
            else {"version": failed, "reason": "health check failed", "at": "2026-12-02T04:00Z"},
            "retry": None, "update_in_progress": False,
        }
    ).encode()  # fmt: skip


def reports_dir(tmp_path: Path, on: int, rolled_back: int, untouched: int = 0) -> Path:
    d = tmp_path / "reports"
    d.mkdir(parents=True, exist_ok=True)
    devices = (
        [(f"on-{i}", _report(f"on-{i}", "2.0")) for i in range(on)]
        + [(f"rb-{i}", _report(f"rb-{i}", "1.0", failed="2.0", other="2.0"))
           for i in range(rolled_back)]
        + [(f"old-{i}", _report(f"old-{i}", "1.0", other="0.9")) for i in range(untouched)]
    )  # fmt: skip
    for device, body in devices:
        report_file(d, device).write_bytes(body)
    return d


def test_status_counts_the_reports(fleet: Path, tmp_path: Path) -> None:
    d = reports_dir(tmp_path, on=6, rolled_back=2, untouched=5)
    (d / ("0" * 32 + ".json")).write_text("{not json")
    warned: list[str] = []
    s = status(fleet, P, "2.0", NOW, reports_dir=d, warn=warned.append)
    assert s.reports is not None
    assert s.reports.to_json() == {
        "version": "2.0", "reports": 13, "attempted": 8, "on": 6, "in_trial": 0, "failed": 2,
        "rolled_back": 2, "failure_rate": 0.25, "unreadable": 1,
    }  # fmt: skip
    assert len(warned) == 1 and "strict JSON" in warned[0]
    assert "2 failed on it, 2 rolled back; failure rate 25.0%" in s.text()


def test_the_gate_below_the_threshold_signs_nothing(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    d = reports_dir(tmp_path, on=19, rolled_back=1)
    before = _files(fleet)
    g = gate(fleet, P, "2.0", d, NOW, _pub(keys), max_failure_rate=0.05, min_reports=10)
    assert not g.tripped and g.change is None and _files(fleet) == before
    assert "5.0% is not above 5.0%" in g.reason
    # too few reports: no decision either, whatever the rate
    d2 = reports_dir(tmp_path / "few", on=1, rolled_back=3)
    g = gate(fleet, P, "2.0", d2, NOW, _pub(keys), max_failure_rate=0.05, min_reports=10)
    assert not g.tripped and "fewer than 10" in g.reason and _files(fleet) == before


def test_the_gate_above_the_threshold_signs_a_halt_once(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    d = reports_dir(tmp_path, on=8, rolled_back=2)
    g = gate(fleet, P, "2.0", d, NOW, _pub(keys), max_failure_rate=0.1, min_reports=10)
    assert g.tripped and g.change is not None and not g.change.already
    assert all(i.rollout is not None and i.rollout.halted for i in _published(fleet, "2.0"))
    doc = g.to_json()
    assert doc["tripped"] is True and doc["reports"]["failure_rate"] == 0.2
    assert "TRIPPED: halt 2.0 (signed)" in g.text()
    files = _files(fleet)
    again = gate(fleet, P, "2.0", d, NOW, _pub(keys), max_failure_rate=0.1, min_reports=10)
    assert again.tripped and again.change is not None and again.change.already
    assert _files(fleet) == files


def test_the_gate_can_recall(fleet: Path, keys: KeyConfig, tmp_path: Path) -> None:
    d = reports_dir(tmp_path, on=5, rolled_back=5)
    g = gate(
        fleet, P, "2.0", d, NOW, _pub(keys), max_failure_rate=0.2, min_reports=10, action="recall"
    )
    assert g.tripped
    infos = _published(fleet, "2.0")
    assert all(i.recalled for i in infos)
    assert infos[0].withdrawn is not None and "5 of 10 devices failed" in infos[0].withdrawn.reason


def test_the_gate_refuses_a_rate_outside_0_to_1(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="--max-failure-rate"):
        gate(fleet, P, "2.0", tmp_path, NOW, _pub(keys), max_failure_rate=5)


def test_a_crash_at_any_write_of_a_halt_leaves_the_previous_repository_valid(
    fleet: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """The rollout changes publish through the same crash-safe path as a release: cut at
    every write, the repository verifies with either the old or the new policy, and a
    rerun converges."""
    import shutil

    from repo.errors import PublishError
    from tests.repo.test_repo_publish import FailingDisk

    def halted_paths(repo: Path) -> list[str]:
        return [
            a.path
            for a in listed_artifacts(load_state(repo).targets.signed)
            if a.info.rollout is not None and a.info.rollout.halted
        ]

    def pub(disk: FailingDisk | None) -> Publisher:
        return Publisher(keys, signers=load_role_signers(keys, CHAIN_ROLES), disk=disk)

    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(fleet, probe)
    halt(probe, P, "2.0", NOW, pub(counting))
    after = halted_paths(probe)
    assert halted_paths(fleet) == [] and len(after) == 2
    for k in range(len(counting.effects)):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(fleet, work)
        with pytest.raises(PublishError):
            halt(work, P, "2.0", NOW, pub(FailingDisk(k)))
        client_view(work, tmp_path / f"fresh-{k}", root_bytes(work))  # verifies
        assert halted_paths(work) in ([], after), counting.effects[k]
        halt(work, P, "2.0", NOW, pub(None))
        assert halted_paths(work) == after


def test_the_gate_command_exits_0_either_way_and_says_tripped(
    fleet: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers_repo import publisher_cli

    d = reports_dir(tmp_path, on=9, rolled_back=1)
    argv = ["rollout", "gate", str(fleet), P, "2.0", "--keys", str(keys.source),
            "--reports", str(d), "--min-reports", "5"]  # fmt: skip
    code, out, err = publisher_cli(capsys, "--json", *argv, "--max-failure-rate", "0.1")
    assert code == 0, err
    assert json.loads(out)["tripped"] is False and json.loads(out)["change"] is None
    code, out, err = publisher_cli(capsys, *argv, "--max-failure-rate", "0.05")
    assert code == 0, err
    assert "failure rate 1/10 = 10.0% (limit 5.0%, at least 5 attempted): TRIPPED" in out
    assert all(i.rollout is not None and i.rollout.halted for i in _published(fleet, "2.0"))
    code, out, err = publisher_cli(capsys, "--json", "rollout", "status", str(fleet), P, "2.0")
    assert code == 0 and json.loads(out)["halted"] is True and json.loads(out)["allowed_bp"] == 0
