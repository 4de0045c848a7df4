"""Publisher side of product delegations: ``repo delegate``, releases routed to the product's
role, hash bins for older versions, and a product key that can publish only its product."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from repo.ceremony import publish_file, sign_file, stage_delegation_file
from repo.delegation import (
    DelegationSpec,
    delegate,
    delegate_edit,
    delegated_roles,
    product_view,
    published_targets,
)
from repo.errors import KeyConfigError, PublishError, ThresholdError, UsageError
from repo.keys import KeyConfig, load_role_keys, load_signers
from repo.prune import prune
from repo.refresh import refresh, repository_status
from repo.repository import load_role_signers, open_transaction, release_signers
from repo.roles import ONLINE_ROLES
from repo.state import load_state
from repo.withdraw import product_artifacts, product_listing, withdraw
from tests.helpers_delegation import blob_target, product_key_file, product_keys
from tests.helpers_repo import NOW, make_updater, publisher_cli, root_bytes
from tests.repo.test_repo_publish import FailingDisk


def _spec(keys: KeyConfig, product: str, bins: int = 0, head: int = 3) -> DelegationSpec:
    return DelegationSpec(product, keys.role(product), bins=bins, head=head)


def _delegate(repo: Path, keys: KeyConfig, pk: KeyConfig, product: str, **kw: int) -> None:
    signers = dict(load_role_signers(keys, ("targets", *ONLINE_ROLES)))
    signers[product] = load_signers(pk, product)
    delegate(repo, _spec(pk, product, **kw), signers, NOW)


def _online(keys: KeyConfig) -> dict[str, list[object]]:
    return dict(load_role_signers(keys, ONLINE_ROLES))  # type: ignore[arg-type]


def _release(
    repo: Path, tmp: Path, keys: KeyConfig, pk: KeyConfig, product: str, version: str
) -> set[str]:
    """Release a full and a delta of ``version`` with the product key only; returns the
    metadata files written."""
    before = {p.name for p in (repo / "metadata").iterdir()}
    signers = {**_online(keys), product: load_signers(pk, product)}
    with open_transaction(repo) as tx:
        for kind in ("full", "delta"):
            tf, src = blob_target(tmp / "src", product, version, kind)
            tx.add_target(tf, src)
        tx.commit(signers, NOW)  # type: ignore[arg-type]
    return {p.name for p in (repo / "metadata").iterdir()} - before


def test_delegate_edit_adds_a_terminating_product_role_and_revokes_replaced_keys(
    tmp_path: Path,
) -> None:
    a1 = product_keys(tmp_path, "edge-gw", "a")
    a2 = product_keys(tmp_path, "edge-gw", "b")
    other = product_keys(tmp_path, "cam", "c")
    top = delegate_edit(_spec(other, "cam"))(Targets(version=1))
    top = delegate_edit(_spec(a1, "edge-gw"))(top)
    assert top.delegations is not None and top.delegations.roles is not None
    role = top.delegations.roles["edge-gw"]
    assert role.terminating and role.paths == ["edge-gw/*/*"]
    assert role.is_delegated_path("edge-gw/2.0/full.img.zst")
    assert not role.is_delegated_path("cam/2.0/full.img.zst")
    old_id = next(iter(a1.role("edge-gw").keyids))
    rotated = delegate_edit(_spec(a2, "edge-gw"))(top)
    assert rotated.delegations is not None and rotated.delegations.roles is not None
    assert list(rotated.delegations.roles) == ["cam", "edge-gw"]  # order kept
    assert old_id not in rotated.delegations.keys  # revoked
    assert set(rotated.delegations.roles["edge-gw"].keyids) == set(a2.role("edge-gw").keyids)
    assert old_id in top.delegations.keys  # pure: the input is untouched


def test_bins_must_be_a_power_of_two(tmp_path: Path) -> None:
    pk = product_keys(tmp_path, "edge-gw", "a")
    with pytest.raises(UsageError, match="power of two"):
        _spec(pk, "edge-gw", bins=6)
    with pytest.raises(UsageError, match="top-level role"):
        _spec(product_keys(tmp_path, "targets", "a"), "targets")


def test_a_product_release_signs_its_role_and_not_the_top_level_targets(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw")
    top_version = load_state(repo).targets.signed.version
    written = _release(repo, tmp_path, keys, pk, "edge-gw", "2.0")
    st = load_state(repo)
    assert st.targets.signed.version == top_version  # no top-level targets key used
    assert written == {"2.edge-gw.json", f"{st.snapshot.signed.version}.snapshot.json"}
    assert "edge-gw.json" in st.snapshot.signed.meta
    # python-tuf's own client resolves the new target through the delegation
    updater = make_updater(repo, tmp_path / "client", root_bytes(repo))
    updater.refresh()
    info = updater.get_targetinfo("edge-gw/2.0/full.img.zst")
    assert info is not None and info.length > 0


def test_release_signers_refuse_foreign_and_missing_product_keys(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    a = product_keys(tmp_path / "k", "edge-gw", "a")
    b = product_keys(tmp_path / "k", "cam", "b")
    _delegate(repo, keys, a, "edge-gw")
    _delegate(repo, keys, b, "cam")
    st = load_state(repo)
    # cam's CI key file presented for an edge-gw release: refused before any slow work
    from repo.keys import load_role_keys

    foreign = load_role_keys(b.source, "edge-gw")
    with pytest.raises(KeyConfigError, match="not edge-gw's delegated keys"):
        release_signers(st, keys, "edge-gw", foreign)
    with pytest.raises(UsageError, match="delegated to its own keys"):
        release_signers(st, keys, "edge-gw", None)
    with pytest.raises(UsageError, match="not delegated"):
        release_signers(st, keys, "other", a)
    signers = release_signers(st, keys, "edge-gw", a)
    assert set(signers) == {"snapshot", "timestamp", "edge-gw"}  # no targets key loaded


def test_a_product_key_cannot_sign_another_products_role(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    a = product_keys(tmp_path / "k", "edge-gw", "a")
    b = product_keys(tmp_path / "k", "cam", "b")
    _delegate(repo, keys, a, "edge-gw")
    _delegate(repo, keys, b, "cam")
    before = sorted(p.name for p in (repo / "metadata").iterdir())
    signers = {**_online(keys), "cam": load_signers(load_role_keys_as(a, "cam"), "cam")}
    with open_transaction(repo) as tx:
        tf, src = blob_target(tmp_path / "src", "cam", "9.0")
        tx.add_target(tf, src)
        with pytest.raises(ThresholdError, match="cam v2"):
            tx.commit(signers, NOW)  # type: ignore[arg-type]
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == before


def load_role_keys_as(conf: KeyConfig, role: str) -> KeyConfig:
    from repo.keys import load_role_keys

    return load_role_keys(conf.source, role)


def test_head_and_bins_keep_a_release_to_a_constant_number_of_files(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=4, head=2)
    st = load_state(repo)
    assert sum(name.startswith("edge-gw-bin-") for name in st.snapshot.signed.meta) == 4
    counts = []
    for i in range(1, 7):
        written = _release(repo, tmp_path, keys, pk, "edge-gw", f"{i}.0")
        counts.append(len(written))
    # product role + snapshot, plus at most the 2 bins receiving the version leaving the head
    assert max(counts) <= 4 and counts[:2] == [2, 2]
    st = load_state(repo)
    view = product_view(st, "edge-gw")
    assert view is not None
    head_versions = {p.split("/")[1] for p in view.targets.targets}
    assert head_versions == {"5.0", "6.0"}
    everything = published_targets(st, "edge-gw")
    assert {p.split("/")[1] for p in everything} == {f"{i}.0" for i in range(1, 7)}
    # bins are signed by the product keys and found by path by python-tuf's own client
    updater = make_updater(repo, tmp_path / "client", root_bytes(repo))
    updater.refresh()
    assert updater.get_targetinfo("edge-gw/1.0/full.img.zst") is not None
    assert updater.get_targetinfo("edge-gw/1.0/nothing.img") is None
    # a released path is immutable, wherever it now lives (a bin here)
    with open_transaction(repo) as tx, pytest.raises(UsageError, match="already published"):
        tf, src = blob_target(tmp_path / "src2", "edge-gw", "1.0")
        tx.add_target(tf, src)


def test_rotating_the_product_key_resigns_role_and_bins(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    old = product_keys(tmp_path / "k", "edge-gw", "a")
    new = product_keys(tmp_path / "k", "edge-gw", "b")
    _delegate(repo, keys, old, "edge-gw", bins=2, head=1)
    for v in ("1.0", "2.0"):
        _release(repo, tmp_path, keys, old, "edge-gw", v)
    _delegate(repo, keys, new, "edge-gw", bins=2, head=1)
    st = load_state(repo)  # every role, bins included, verifies under the new delegation
    view = product_view(st, "edge-gw")
    assert view is not None and {p.split("/")[1] for p in view.all_targets()} == {"1.0", "2.0"}
    signers = {**_online(keys), "edge-gw": load_signers(old, "edge-gw")}
    with open_transaction(repo) as tx:
        tf, src = blob_target(tmp_path / "src", "edge-gw", "3.0")
        tx.add_target(tf, src)
        with pytest.raises(ThresholdError):
            tx.commit(signers, NOW)  # type: ignore[arg-type]
    _release(repo, tmp_path, keys, new, "edge-gw", "3.0")
    md = Metadata[Targets].from_bytes(
        (
            repo / "metadata" / f"{load_state(repo).snapshot.signed.meta['edge-gw.json'].version}"
            ".edge-gw.json"
        ).read_bytes()
    )
    assert set(md.signatures) == set(new.role("edge-gw").keyids)


def test_prune_keeps_every_file_a_delegated_product_lists(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """Regression (merge of prune and delegations): prune deleted every artifact file that
    the top-level targets did not name, i.e. all of a delegated product's files."""
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw")
    _release(repo, tmp_path, keys, pk, "edge-gw", "2.0")
    signers = dict(load_role_signers(keys, ("targets", *ONLINE_ROLES)))
    for version in ("1.0", "2.0", "3.0"):  # a top-level product, so prune has work
        with open_transaction(repo) as tx:
            tf, src = blob_target(tmp_path / f"o{version}", "other", version, "full")
            tx.add_target(tf, src)
            tx.commit(signers, NOW)  # type: ignore[arg-type]
    product_files = sorted((repo / "targets" / "edge-gw").rglob("*"))
    assert any(p.is_file() for p in product_files)

    result = prune(repo, keys, 1, NOW, signers=signers)  # type: ignore[arg-type]
    assert result.published and result.deleted  # other 1.0 and 2.0 went
    assert sorted((repo / "targets" / "edge-gw").rglob("*")) == product_files
    assert all(not d.startswith("targets/edge-gw/") for d in result.deleted)


def _metadata_files(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "metadata").iterdir())


def _withdrawn(repo: Path, product: str) -> dict[str, str]:
    """path -> withdrawal reason of every withdrawn target of ``product``, wherever listed."""
    return {
        a.path: a.info.withdrawn.reason
        for a in product_artifacts(load_state(repo), product)
        if a.info.withdrawn is not None
    }


def test_withdraw_of_a_delegated_release_is_signed_by_the_product_key_alone(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """Before: withdraw refused a delegated product. Now its role (and the bin listing an
    older version) is re-signed with the product key; the top-level targets are not."""
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=4, head=2)
    for v in ("2.0", "3.0", "4.0"):
        _release(repo, tmp_path, keys, pk, "edge-gw", v)
    before = load_state(repo)
    signers = {**_online(keys), "edge-gw": load_signers(pk, "edge-gw")}  # no targets key
    head = withdraw(repo, keys, "edge-gw", "4.0", "bad build", NOW, signers=signers)  # type: ignore[arg-type]
    assert head.roles == ("edge-gw",) and len(head.marked) == 2
    binned = withdraw(repo, keys, "edge-gw", "2.0", "old and bad", NOW, signers=signers)  # type: ignore[arg-type]
    assert binned.roles and all(r.startswith("edge-gw-bin-") for r in binned.roles)
    after = load_state(repo)  # every role verifies, as a device would check it
    assert after.targets.signed.version == before.targets.signed.version
    assert set(_withdrawn(repo, "edge-gw").values()) == {"bad build", "old and bad"}
    assert len(_withdrawn(repo, "edge-gw")) == 4
    # python-tuf's own client finds the withdrawn entry in the bin, by path
    updater = make_updater(repo, tmp_path / "client", root_bytes(repo))
    updater.refresh()
    info = updater.get_targetinfo("edge-gw/2.0/full.img.zst")
    assert info is not None and "withdrawn" in info.custom["otakit"]
    # the key file path: the same product key, loaded from its file
    again = withdraw(repo, keys, "edge-gw", "3.0", "also bad", NOW, product_keys=pk)
    assert again.roles == ("edge-gw",)


def test_withdraw_of_a_delegated_release_without_its_product_key_signs_nothing(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    other = product_keys(tmp_path / "k", "edge-gw", "b")
    _delegate(repo, keys, pk, "edge-gw")
    _release(repo, tmp_path, keys, pk, "edge-gw", "2.0")
    before = _metadata_files(repo)
    with pytest.raises(UsageError, match="--product-keys"):
        withdraw(repo, keys, "edge-gw", "2.0", "bad build", NOW)
    with pytest.raises(KeyConfigError, match="not edge-gw's delegated keys"):
        withdraw(repo, keys, "edge-gw", "2.0", "bad build", NOW, product_keys=other)
    # the top-level targets key cannot sign the product's role either
    signers = dict(load_role_signers(keys, ("targets", *ONLINE_ROLES)))
    with pytest.raises(ThresholdError, match="edge-gw"):
        withdraw(repo, keys, "edge-gw", "2.0", "bad build", NOW, signers=signers)  # type: ignore[arg-type]
    assert _metadata_files(repo) == before


def test_prune_of_a_delegated_product_keeps_the_newest_and_the_bases_of_kept_deltas(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=4, head=2)
    for v in ("1.0", "2.0", "3.0", "4.0"):  # each delta is from 1.0
        _release(repo, tmp_path, keys, pk, "edge-gw", v)
    before = load_state(repo)
    # without the product's keys it is left alone (and so are its files)
    skipped = prune(repo, keys, 1, NOW, dry_run=True)
    assert skipped.plan.skipped == ("edge-gw",) and not skipped.plan.remove
    result = prune(repo, keys, 1, NOW, product_keys={"edge-gw": pk})
    assert result.published and result.plan.kept_versions["edge-gw"] == (
        "4.0",
        "1.0 (base of a kept delta)",
    )
    st = load_state(repo)
    assert st.targets.signed.version == before.targets.signed.version  # no targets key used
    left = set(published_targets(st, "edge-gw"))
    assert left == {
        "edge-gw/4.0/full.img.zst",
        "edge-gw/4.0/delta-from-1.0.otd",
        "edge-gw/1.0/full.img.zst",
    }
    assert {d.split("/")[1] for d in result.deleted} == {"edge-gw"}
    stored = {p.name.split(".", 1)[1] for p in (repo / "targets").rglob("*") if p.is_file()}
    assert stored == {"full.img.zst", "delta-from-1.0.otd"}
    assert len([p for p in (repo / "targets").rglob("*") if p.is_file()]) == 3


def test_status_lists_product_roles_and_bins_and_flags_those_expiring(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=2, head=1)
    fresh = repository_status(repo, NOW)
    assert [(d.role, d.version) for d in fresh.delegated] == [
        ("edge-gw", 1),
        ("edge-gw-bin-0", 1),
        ("edge-gw-bin-1", 1),
    ]
    assert fresh.to_json()["delegated"]["edge-gw"]["product"] == "edge-gw"
    assert not [w for w in fresh.warnings if w.product]
    later = repository_status(repo, NOW + timedelta(days=80))  # they live 91 days
    (warning,) = [w for w in later.warnings if w.product]
    assert warning.product == "edge-gw" and warning.also == 2
    assert "--product-keys edge-gw=ROLEKEYS" in warning.message()
    expired = repository_status(repo, NOW + timedelta(days=92))
    assert any(w.product and w.expired for w in expired.warnings)


def test_refresh_resigns_product_roles_and_bins_near_expiry_with_the_product_key(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=2, head=1)
    for v in ("1.0", "2.0"):
        _release(repo, tmp_path, keys, pk, "edge-gw", v)
    before = {d.role: d for d in delegated_roles(load_state(repo))}
    top = load_state(repo).targets.signed.version
    # far from expiry: the product key is given, nothing delegated is due
    soon = refresh(repo, {**_online(keys), "edge-gw": load_signers(pk, "edge-gw")}, NOW)  # type: ignore[dict-item]
    assert soon.refreshed == ONLINE_ROLES
    later = NOW + timedelta(days=80)
    # without the product key: the online roles are refreshed, the warning names its keys
    without = refresh(repo, _online(keys), later)  # type: ignore[arg-type]
    assert without.refreshed == ONLINE_ROLES
    assert any(w.product == "edge-gw" for w in without.warnings)
    assert {d.role: d.version for d in without.delegated} == {
        r: d.version for r, d in before.items()
    }
    # with it: the product role and every bin re-signed, the top-level targets untouched
    signers = {**_online(keys), "edge-gw": load_signers(pk, "edge-gw")}
    done = refresh(repo, signers, later)  # type: ignore[arg-type]
    assert set(done.refreshed) == {*ONLINE_ROLES, *before}
    st = load_state(repo)  # verifies every role, bins through the re-signed product role
    after = {d.role: d for d in delegated_roles(st)}
    assert all(after[r].version == before[r].version + 1 for r in before)
    assert all(after[r].expires > later + timedelta(days=90) for r in before)
    assert not [w for w in done.warnings if w.product]
    assert st.targets.signed.version == top
    view = product_view(st, "edge-gw")
    assert view is not None
    assert {p.split("/")[1] for p in view.all_targets()} == {"1.0", "2.0"}
    # and a product key of another product cannot re-sign it
    other = product_keys(tmp_path / "k", "edge-gw", "b")
    with pytest.raises(ThresholdError):
        refresh(
            repo,
            {**_online(keys), "edge-gw": load_signers(other, "edge-gw")},  # type: ignore[dict-item]
            later + timedelta(days=85),
        )


def test_cli_status_and_refresh_cover_product_roles(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = product_key_file(tmp_path / "k", "edge-gw", "a")
    pk = load_role_keys(key_file, "edge-gw")
    _delegate(repo, keys, pk, "edge-gw", bins=2, head=1)
    code, out, err = publisher_cli(capsys, "repo", "status", str(repo), "--warn-days", "400")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows[4:]] == ["edge-gw", "edge-gw-bin-0", "edge-gw-bin-1"]
    assert all(r[3] == "(edge-gw's keys; expires soon)" for r in rows[4:])
    assert "WARNING: edge-gw v1 (and 2 more of edge-gw's roles) expires" in err
    argv = ["repo", "refresh", str(repo), "--keys", str(keys.source), "--warn-days", "400"]
    code, out, err = publisher_cli(capsys, *argv, "--product-keys", f"edge-gw={key_file}", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["refreshed"]) >= {"edge-gw", "edge-gw-bin-0", "edge-gw-bin-1"}
    assert doc["delegated"]["edge-gw"]["version"] == 2


# --- a crash at any write of the new publications leaves the previous repository valid ------


def _delegated_state(repo: Path) -> tuple[object, ...]:
    """What a device would verify (``load_state`` and every product role and bin, through the
    device's own verifier), reduced to what the changes here alter."""
    st = load_state(repo)
    roles = tuple((d.role, d.version) for d in delegated_roles(st))
    withdrawn = tuple(a.path for a in product_artifacts(st) if a.info.withdrawn is not None)
    return st.targets.signed.version, roles, withdrawn, tuple(sorted(product_listing(st)))


def _crash_sweep(
    base: Path, tmp_path: Path, change: Callable[[Path, FailingDisk | None], object]
) -> int:
    """Fail every effect of ``change`` in turn: each time the repository verifies (python-tuf
    too) as the old or the new state, and a rerun converges to the new one."""
    before = _delegated_state(base)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(base, probe)
    counting = FailingDisk(None)
    change(probe, counting)
    after = _delegated_state(probe)
    assert after != before
    for k in range(len(counting.effects)):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(base, work)
        with pytest.raises(PublishError):
            change(work, FailingDisk(k))
        make_updater(work, tmp_path / f"fresh-{k}", root_bytes(work)).refresh()
        assert _delegated_state(work) in (before, after), counting.effects[k]
        if _delegated_state(work) == before:
            change(work, None)  # a rerun converges
        assert _delegated_state(work) == after
    return len(counting.effects)


@pytest.fixture
def binned(repo: Path, keys: KeyConfig, tmp_path: Path) -> tuple[Path, KeyConfig]:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    _delegate(repo, keys, pk, "edge-gw", bins=2, head=1)
    for v in ("2.0", "3.0", "4.0"):
        _release(repo, tmp_path, keys, pk, "edge-gw", v)
    return repo, pk


def test_a_crash_at_any_write_of_a_delegated_withdraw_or_prune_leaves_a_valid_repository(
    binned: tuple[Path, KeyConfig], keys: KeyConfig, tmp_path: Path
) -> None:
    repo, pk = binned
    n = _crash_sweep(
        repo,
        tmp_path / "w",
        lambda r, disk: withdraw(r, keys, "edge-gw", "2.0", "bad", NOW, product_keys=pk, disk=disk),
    )
    assert n > 10
    _crash_sweep(
        repo,
        tmp_path / "p",
        lambda r, disk: prune(r, keys, 1, NOW, product_keys={"edge-gw": pk}, disk=disk),
    )


def test_a_crash_at_any_write_of_a_product_refresh_leaves_a_valid_repository(
    binned: tuple[Path, KeyConfig], keys: KeyConfig, tmp_path: Path
) -> None:
    repo, pk = binned
    signers = {**_online(keys), "edge-gw": load_signers(pk, "edge-gw")}
    later = NOW + timedelta(days=80)
    _crash_sweep(repo, tmp_path, lambda r, disk: refresh(r, signers, later, disk=disk))  # type: ignore[arg-type]


def test_a_crash_at_any_write_of_a_delegation_ceremony_leaves_a_valid_repository(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "k", "edge-gw", "a")
    staged = tmp_path / "delegate.json"
    stage_delegation_file(repo, _spec(pk, "edge-gw", bins=2, head=1), staged, NOW)
    for u in (keys.role("targets").keys[0].uri, pk.role("edge-gw").keys[0].uri):
        sign_file(staged, u)
    _crash_sweep(repo, tmp_path, lambda r, disk: publish_file(staged, r, [keys], NOW, disk=disk))
