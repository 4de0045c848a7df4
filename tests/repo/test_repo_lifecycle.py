"""Withdraw and prune at the library level: what they sign, what they delete, and that a crash
at any write leaves the previous repository valid (the publisher crash sweep, extended)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from repo.errors import PublishError, UsageError
from repo.keys import KeyConfig
from repo.prune import plan_prune, prune
from repo.repository import load_role_signers, open_transaction
from repo.roles import CHAIN_ROLES
from repo.state import load_state
from repo.withdraw import listed_artifacts, withdraw
from tests.helpers_repo import NOW, client_view, make_updater, root_bytes
from tests.repo.test_repo_publish import FailingDisk
from verifier.artifact import ArtifactInfo, BaseRef, ImageRef, ImageVersion, target_path
from verifier.errors import NoSuchVersionError
from verifier.plan import Candidate, DeviceFacts, Installed, NothingToDo, UpdatePlan, resolve

P = "edge-gw"


def _image(version: str) -> ImageRef:
    return ImageRef(4096, hashlib.sha256(f"image {version}".encode()).hexdigest())


def _info(version: str, base: str | None = None) -> ArtifactInfo:
    if base is None:
        return ArtifactInfo(
            P, ("rpi4",), ImageVersion.parse(version), "full", "zstd", _image(version)
        )
    return ArtifactInfo(
        P, ("rpi4",), ImageVersion.parse(version), "delta", "otakit-delta", _image(version),
        BaseRef(ImageVersion.parse(base), _image(base)), ImageRef(64, "cd" * 32),
    )  # fmt: skip


def publish_version(repo: Path, keys: KeyConfig, version: str, bases: tuple[str, ...] = ()) -> None:
    """One release: a full artifact and a delta from each of ``bases`` (bytes are stand-ins:
    these tests are about metadata and files, the device tests decode real ones)."""
    with open_transaction(repo) as tx:
        for info in (_info(version), *(_info(version, b) for b in bases)):
            data = f"artifact {target_path(info)} ".encode() * 200
            src = repo.parent / f"{target_path(info).replace('/', '_')}.src"
            src.write_bytes(data)
            tf = TargetFile.from_data(target_path(info), data, ["sha256"])
            tf.unrecognized_fields["custom"] = info.to_custom()
            tx.add_target(tf, src)
        tx.commit(load_role_signers(keys, CHAIN_ROLES), NOW)


def _candidates(repo: Path) -> list[Candidate]:
    st = load_state(repo)
    return [
        Candidate.of(a.path, a.target.length, a.target.hashes, a.info)
        for a in listed_artifacts(st.targets.signed)
    ]


def _facts(version: str) -> DeviceFacts:
    return DeviceFacts(P, "rpi4", Installed(ImageVersion.parse(version), _image(version)))


def _stored(repo: Path) -> set[str]:
    return {
        str(p.relative_to(repo / "targets")) for p in (repo / "targets").rglob("*") if p.is_file()
    }


@pytest.fixture
def three(repo: Path, keys: KeyConfig) -> Path:
    """1.0; 2.0 with a delta from 1.0; 3.0 with deltas from 1.0 and 2.0."""
    publish_version(repo, keys, "1.0")
    publish_version(repo, keys, "2.0", ("1.0",))
    publish_version(repo, keys, "3.0", ("1.0", "2.0"))
    return repo


# --- withdraw ---------------------------------------------------------------------------------


def test_withdraw_marks_the_full_and_every_delta_to_the_version(
    three: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = load_state(three)
    r = withdraw(three, keys, P, "3.0", "bricks rev-B boards", NOW)
    assert sorted(r.marked) == sorted(r.targets) == [
        "edge-gw/3.0/delta-from-1.0.otd", "edge-gw/3.0/delta-from-2.0.otd",
        "edge-gw/3.0/full.img.zst",
    ]  # fmt: skip
    st = load_state(three)
    assert st.targets.signed.version == before.targets.signed.version + 1
    listed = {a.path: a for a in listed_artifacts(st.targets.signed)}
    for path in r.targets:
        a = listed[path]
        assert a.info.withdrawn is not None and a.info.withdrawn.reason == "bricks rev-B boards"
        assert a.target.unrecognized_fields["custom"]["otakit"]["schema"] == "2.0"
        old = before.targets.signed.targets[path]
        assert (a.target.length, a.target.hashes) == (old.length, old.hashes)  # same bytes
    assert listed["edge-gw/2.0/full.img.zst"].info.withdrawn is None
    # a python-tuf client still verifies everything, and every file is still served
    assert len(client_view(three, tmp_path / "c", root_bytes(three))) == 6
    # the device passes it over: on 2.0 nothing to do, on 1.0 it goes to 2.0
    got = resolve(_candidates(three), _facts("2.0"))
    assert isinstance(got, NothingToDo) and "3.0 was withdrawn: bricks rev-B boards" in got.reason
    got = resolve(_candidates(three), _facts("1.0"))
    assert isinstance(got, UpdatePlan) and str(got.version) == "2.0"


def test_withdrawing_twice_is_idempotent_and_signs_nothing(three: Path, keys: KeyConfig) -> None:
    withdraw(three, keys, P, "3.0", "bad", NOW)
    files = sorted(p.name for p in (three / "metadata").iterdir())
    again = withdraw(three, keys, P, "3.0", "another reason", NOW)
    assert again.already and again.marked == () and again.withdrawal.reason == "bad"
    assert "that reason stands" in again.warnings[0]
    assert sorted(p.name for p in (three / "metadata").iterdir()) == files


@pytest.mark.parametrize(
    ("product", "version", "match"),
    [
        (P, "9.0", r"edge-gw 9\.0: expected a published version.*1\.0, 2\.0, 3\.0"),
        ("other", "1.0", r"product 'other': expected a published product.*edge-gw"),
    ],
)
def test_withdrawing_what_is_not_published_is_a_usage_error(
    three: Path, keys: KeyConfig, product: str, version: str, match: str
) -> None:
    with pytest.raises(NoSuchVersionError, match=match) as e:
        withdraw(three, keys, product, version, "x", NOW)
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    ("version", "reason", "match"),
    [("3.0", "", "--reason"), ("3.0", "a\nb", "--reason"), ("v3", "x", "invalid image version")],
)
def test_a_bad_request_is_a_usage_error(
    three: Path, keys: KeyConfig, version: str, reason: str, match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        withdraw(three, keys, P, version, reason, NOW)


# --- prune ------------------------------------------------------------------------------------


def test_the_plan_keeps_the_newest_and_the_bases_of_kept_deltas(three: Path) -> None:
    plan = plan_prune(load_state(three).targets.signed, 1)
    # 3.0 has deltas from 1.0 and 2.0: both bases keep their full artifact, not their deltas
    assert plan.remove == ("edge-gw/2.0/delta-from-1.0.otd",)
    assert plan.kept_versions == {
        P: ("3.0", "2.0 (base of a kept delta)", "1.0 (base of a kept delta)")
    }
    plan = plan_prune(load_state(three).targets.signed, 2)
    assert plan.remove == ()
    assert plan.kept_versions[P] == ("3.0", "2.0", "1.0 (base of a kept delta)")
    with pytest.raises(UsageError, match="--keep"):
        plan_prune(load_state(three).targets.signed, 0)


def test_prune_publishes_first_then_deletes_exactly_the_unreferenced_files(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    for v in ("1.0", "2.0", "3.0", "4.0"):
        publish_version(repo, keys, v)
    publish_version(repo, keys, "5.0", ("4.0",))
    # an orphan a crashed publish left (hidden temp) and one from a blob never listed
    (repo / "targets" / P / "9.9").mkdir(parents=True)
    (repo / "targets" / P / "9.9" / ".deadbeef.full.img.zst.tmp").write_bytes(b"half")
    dry = prune(repo, keys, 1, NOW, dry_run=True)
    assert dry.dry_run and not dry.published
    assert sorted(dry.plan.remove) == [f"edge-gw/{v}/full.img.zst" for v in ("1.0", "2.0", "3.0")]
    stored_before = _stored(repo)
    assert len(dry.deleted) == 4 and _stored(repo) == stored_before  # nothing touched

    r = prune(repo, keys, 1, NOW)
    assert r.published and r.deleted == dry.deleted and r.freed_bytes == dry.freed_bytes
    st = load_state(repo)
    assert sorted(st.targets.signed.targets) == [
        "edge-gw/4.0/full.img.zst", "edge-gw/5.0/delta-from-4.0.otd", "edge-gw/5.0/full.img.zst",
    ]  # fmt: skip
    assert len(_stored(repo)) == 3 and not (repo / "targets" / P / "9.9").exists()
    assert len(client_view(repo, tmp_path / "c", root_bytes(repo))) == 3
    # the metadata history is not pruned: every root, and old targets versions, stay
    assert (repo / "metadata" / "1.root.json").is_file()
    assert (repo / "metadata" / "2.targets.json").is_file()

    again = prune(repo, keys, 1, NOW)  # nothing left to do: no signature, no deletion
    assert not again.published and again.deleted == ()
    assert load_state(repo).targets.signed.version == st.targets.signed.version


def test_a_crash_between_publishing_and_deleting_leaves_orphans_the_next_prune_removes(
    three: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    class DeleteFails(FailingDisk):
        def unlink(self, path: Path) -> None:
            if not path.name.startswith("."):
                raise OSError(5, "injected")
            super().unlink(path)

    with pytest.raises(PublishError, match="published the pruned metadata; deleting"):
        prune(three, keys, 1, NOW, disk=DeleteFails(None))
    assert len(client_view(three, tmp_path / "c", root_bytes(three))) == 5  # valid, pruned
    r = prune(three, keys, 1, NOW)
    assert not r.published and len(r.deleted) == 1


def _sweep(
    base: Path, tmp_path: Path, change: Callable[[Path, FailingDisk | None], object]
) -> None:
    """Fail every effect of ``change`` in turn: each time, the repository a fresh client and a
    client that saw the previous state read is valid and either the old or the new one; a
    rerun then completes."""
    before = client_view(base, tmp_path / "before", root_bytes(base))
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(base, probe)
    counting = FailingDisk(None)
    change(probe, counting)
    after = client_view(probe, tmp_path / "after", root_bytes(probe))
    assert after != before
    total = len(counting.effects)
    assert total > 10, counting.effects
    seen = tmp_path / "seen"
    client_view(base, seen, root_bytes(base))
    for k in range(total):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(base, work)
        with pytest.raises(PublishError):
            change(work, FailingDisk(k))
        got = client_view(work, tmp_path / f"fresh-{k}", root_bytes(work))
        assert got in (before, after), counting.effects[k]
        cont = tmp_path / f"cont-{k}"
        shutil.copytree(seen, cont)
        make_updater(work, cont, root_bytes(work)).refresh()
        change(work, None)  # a rerun converges
        assert client_view(work, tmp_path / f"retry-{k}", root_bytes(work)) == after
        assert _stored(work) == _stored(probe)


def test_a_crash_at_any_write_of_withdraw_leaves_the_previous_repository_valid(
    three: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    def change(repo: Path, disk: FailingDisk | None) -> None:
        withdraw(repo, keys, P, "3.0", "bad", NOW, disk=disk)

    # a withdrawal changes metadata, not files: compare what is marked, after a client verified
    def view_custom(repo: Path) -> list[str]:
        return [
            a.path for a in listed_artifacts(load_state(repo).targets.signed) if a.info.withdrawn
        ]

    before = view_custom(three)
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(three, probe)
    change(probe, counting)
    after = view_custom(probe)
    assert before == [] and len(after) == 3
    for k in range(len(counting.effects)):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(three, work)
        with pytest.raises(PublishError):
            change(work, FailingDisk(k))
        client_view(work, tmp_path / f"fresh-{k}", root_bytes(work))  # verifies
        assert view_custom(work) in (before, after), counting.effects[k]
        change(work, None)
        assert view_custom(work) == after


def test_a_crash_at_any_write_of_prune_leaves_the_previous_repository_valid(
    three: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    _sweep(three, tmp_path, lambda repo, disk: prune(repo, keys, 1, NOW, disk=disk))
