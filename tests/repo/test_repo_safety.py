"""The publisher refuses to sign what devices would refuse: under an expired root, metadata
that expires within its margin, on top of a root history with a gap; and two publishers at
once never interleave (real processes racing for the lock)."""

from __future__ import annotations

import multiprocessing
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from repo.errors import ExpiryMarginError, RootExpiredError, RootHistoryGapError, UsageError
from repo.keys import KeyConfig
from repo.refresh import refresh
from repo.repository import Expiries, init, load_role_signers, open_transaction
from repo.roles import CHAIN_ROLES, ONLINE_ROLES, TOP_LEVEL_ROLES
from repo.rotate import rotate_root
from repo.state import load_state
from tests.helpers_repo import NOW, client_view, root_bytes

A = b"release A " * 1000


def _release(repo: Path, keys: KeyConfig, name: str, data: bytes = A) -> None:
    src = repo.parent / f"{name.replace('/', '_')}.src"
    src.write_bytes(data)
    with open_transaction(repo) as tx:
        tx.add_target(TargetFile.from_data(name, data, ["sha256"]), src)
        tx.commit(load_role_signers(keys, CHAIN_ROLES), NOW)


def _rotate(repo: Path, keys: KeyConfig) -> None:
    signers = load_role_signers(keys, TOP_LEVEL_ROLES)
    rotate_root(repo, keys, NOW, old_signers=signers, new_signers=signers)


def test_a_release_under_a_root_expired_400_days_ago_is_refused(
    keys: KeyConfig, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    init(repo, keys, NOW - timedelta(days=765))  # root lives 365 days: expired 400 days ago
    before = sorted(p.name for p in (repo / "metadata").iterdir())
    with pytest.raises(RootExpiredError, match=r"root v1: .* \(400 days ago\)") as exc:
        _release(repo, keys, "prod/1/a.img")
    assert exc.value.kind() == "root-expired" and exc.value.exit_code == 5
    assert "rotate-root" in exc.value.diagnostic()
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == before
    with pytest.raises(RootExpiredError):
        refresh(repo, load_role_signers(keys, ONLINE_ROLES), NOW)


def test_an_expired_root_is_renewed_by_rotation_and_then_releases_work(
    keys: KeyConfig, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    init(repo, keys, NOW - timedelta(days=765))
    _rotate(repo, keys)  # the remedy the error names is not refused itself
    _release(repo, keys, "prod/1/a.img")
    assert client_view(repo, tmp_path / "c", root_bytes(repo)) == {"prod/1/a.img": A}


@pytest.mark.parametrize(
    ("role", "lifetime"),
    [
        ("timestamp", timedelta(minutes=30)),
        ("snapshot", timedelta(hours=1)),
        ("targets", timedelta(hours=20)),
        ("root", timedelta(days=3)),
    ],
)
def test_metadata_expiring_within_its_margin_is_refused(role: str, lifetime: timedelta) -> None:
    with pytest.raises(ExpiryMarginError, match=f"expiry of {role}: expected a lifetime") as e:
        Expiries(**{role: lifetime})  # type: ignore[arg-type]
    assert isinstance(e.value, UsageError) and e.value.kind() == "expiry-margin"


def test_a_lifetime_just_above_the_margin_is_accepted(keys: KeyConfig, tmp_path: Path) -> None:
    exp = Expiries(timestamp=timedelta(hours=1, seconds=1))
    st = init(tmp_path / "r", keys, NOW, expiries=exp)
    assert st.timestamp.signed.expires - NOW == timedelta(hours=1, seconds=1)


@pytest.mark.parametrize("keep_copy", [True, False], ids=["root.json-copy", "3.root.json"])
def test_a_release_with_a_gap_in_the_root_history_is_refused(
    live: Path, keys: KeyConfig, keep_copy: bool
) -> None:
    _rotate(live, keys)  # root v2
    if not keep_copy:
        _rotate(live, keys)  # root v3; the gap is below a root file
        (live / "metadata" / "root.json").unlink()
    (live / "metadata" / "2.root.json").unlink()
    with pytest.raises(RootHistoryGapError, match=r"expected 2\.root\.json after root v1") as exc:
        _release(live, keys, "prod/2/b.img")
    assert exc.value.kind() == "root-history-gap" and "restore 2.root.json" in exc.value.hint
    with pytest.raises(RootHistoryGapError):
        load_state(live)


def test_a_complete_root_history_still_loads(live: Path, keys: KeyConfig) -> None:
    _rotate(live, keys)
    _rotate(live, keys)
    assert load_state(live).root.signed.version == 3


def _racer(repo: str, keys_path: str, name: str, start: object, out: object) -> None:
    from repo.errors import PublisherBusyError
    from repo.keys import load_key_config

    keys = load_key_config(Path(keys_path))
    start.wait()  # type: ignore[attr-defined]
    try:
        _release(Path(repo), keys, name, name.encode() * 5000)
        out.put((name, "ok"))  # type: ignore[attr-defined]
    except PublisherBusyError as e:
        out.put((name, f"busy: {e.message}"))  # type: ignore[attr-defined]


def test_two_processes_releasing_at_once_never_interleave(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """Each round starts two real processes at the same instant; each either publishes or is
    told clearly that another publisher holds the lock; the repository always verifies and
    lists exactly the releases that reported success, never a mix."""
    ctx = multiprocessing.get_context("spawn")
    assert keys.source is not None
    outcomes: set[tuple[str, ...]] = set()
    for rnd in range(4):
        work = tmp_path / f"r{rnd}" / "repo"
        shutil.copytree(live, work)
        start, out = ctx.Event(), ctx.Queue()
        names = (f"prod/x{rnd}/a.img", f"prod/y{rnd}/b.img")
        procs = [
            ctx.Process(target=_racer, args=(str(work), str(keys.source), n, start, out))
            for n in names
        ]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        results = dict(out.get(timeout=5) for _ in names)
        ok = tuple(sorted(n for n, r in results.items() if r == "ok"))
        assert ok, results
        for n, r in results.items():
            assert r == "ok" or "another publisher" in r, r
        view = client_view(work, tmp_path / f"c{rnd}", root_bytes(work))
        assert sorted(view) == sorted(["prod/1/a.img", *ok])
        st = load_state(work)
        assert st.targets.signed.version == 1 + 1 + len(ok)
        outcomes.add(ok)
    assert outcomes  # which process wins is the scheduler's business; the invariant is above


def test_inspect_reports_a_gap_in_the_root_history(live: Path, keys: KeyConfig) -> None:
    from repo.inspect_report import build_report
    from repo.sources import LocalSource

    _rotate(live, keys)
    _rotate(live, keys)
    assert build_report(LocalSource(live), root_bytes(live), NOW).verified
    (live / "metadata" / "2.root.json").unlink()
    rep = build_report(LocalSource(live), root_bytes(live), NOW)
    assert not rep.verified
    assert [(f.kind, "expected 2.root.json after root v1" in f.message) for f in rep.failures] == [
        ("root-gap", True)
    ]
