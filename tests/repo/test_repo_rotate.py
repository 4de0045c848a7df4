"""Root rotation and key revocation, as the devices see them.

Scenarios: a full re-key followed by clients pinned to root 1 (python-tuf's ``Updater`` and
the device's own ``TufClient``); a revoked timestamp key whose forgery is then refused;
rotations missing the old or the new root threshold refused before any write; a lost
online key (root-first publication, resumable); a lost root key with the threshold still
met; and a power cut at every write of a rotation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Timestamp

from repo.errors import (
    PublishError,
    RepositoryStateError,
    ThresholdError,
    UntrustedRepositoryError,
    UsageError,
)
from repo.keys import KeyConfig, parse_key_config
from repo.refresh import refresh
from repo.repository import load_role_signers
from repo.roles import TOP_LEVEL_ROLES
from repo.rotate import rotate_root
from repo.state import load_state
from signer.keygen import generate_key_set
from tests.helpers_repo import LIVE_CONTENT as A
from tests.helpers_repo import LIVE_PATH, DirFetcher, client_view, make_updater, root_bytes
from tests.helpers_repo import NOW as T0
from tests.helpers_repo import publisher_cli as _run
from tests.repo.test_repo_demo_keys import random_key
from tests.repo.test_repo_publish import FailingDisk
from verifier.effects import RealDisk
from verifier.errors import MetadataError
from verifier.state import StatePaths
from verifier.tuf.client import TufClient
from verifier.tuf.store import TrustedStore

EXPECTED = {LIVE_PATH: A}


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyConfig:
    """A second, complete, random key set (the 'new' keys of a rotation): demo keys are
    derived, so generating them again would give the same keys."""
    return generate_key_set(tmp_path_factory.mktemp("newkeys"), random_key)


def _doc(conf: KeyConfig, role: str) -> dict[str, Any]:
    rk = conf.role(role)
    return {
        "threshold": rk.threshold,
        "keys": [{"public": k.public.to_dict(), "uri": k.uri} for k in rk.keys],
    }


def mix(base: KeyConfig, where: Path, **roles: dict[str, Any]) -> KeyConfig:
    """``base`` with some roles replaced (``_doc(other, role)`` or a hand-built entry)."""
    doc = {
        "otakit_keys": 1,
        "roles": {r: roles.get(r, _doc(base, r)) for r in TOP_LEVEL_ROLES},
    }
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(json.dumps(doc))
    return parse_key_config(doc, where)


def all_signers(conf: KeyConfig) -> dict[str, Sequence[Signer]]:
    return dict(load_role_signers(conf, TOP_LEVEL_ROLES))


def _files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "metadata").iterdir())}


def device_refresh(repo: Path, state_dir: Path, pinned: bytes) -> list[int]:
    """The device's own TUF client, pinned to ``pinned``; returns its trusted root versions."""
    paths = StatePaths(state_dir)
    paths.metadata.mkdir(parents=True, exist_ok=True)
    if not paths.pinned_root.exists():
        paths.pinned_root.write_bytes(pinned)
    with TufClient(
        paths,
        f"file://{repo}/metadata/",
        f"file://{repo}/targets/",
        RealDisk(),
        now=datetime.now(UTC),
        fetcher=DirFetcher(),  # type: ignore[arg-type]
    ) as client:
        client.refresh()
    return [v for v, _ in TrustedStore(paths.metadata, RealDisk()).root_versions()]


def test_full_rekey_is_followed_by_clients_pinned_to_root_1(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    seen, device = tmp_path / "seen", tmp_path / "device"
    client_view(live, seen, pinned)
    device_refresh(live, device, pinned)

    result = rotate_root(
        live, other_keys, T0, old_signers=all_signers(keys), new_signers=all_signers(other_keys)
    )
    assert (result.old_root_version, result.root_version, result.bridged) == (1, 2, True)
    assert result.written == (
        "3.targets.json", "3.snapshot.json", "timestamp.json", "2.root.json", "root.json",
    )  # fmt: skip
    assert all(c.changed and c.revoked for c in result.changes)
    st = load_state(live)
    assert st.root.signed.version == 2
    assert (live / "metadata" / "root.json").read_bytes() == st.root_bytes
    assert set(st.root.signed.roles["timestamp"].keyids) == other_keys.role("timestamp").keyids

    assert client_view(live, tmp_path / "fresh", pinned) == EXPECTED  # follows 1 -> 2
    make_updater(live, seen, pinned).refresh()  # a client that trusted root 1 before
    trusted = json.loads((seen / "metadata" / "root.json").read_bytes())["signed"]
    assert trusted["version"] == 2
    assert device_refresh(live, device, pinned)[-1] == 2
    # new keys alone keep the repository alive afterwards
    refresh(live, load_role_signers(other_keys, ("snapshot", "timestamp")), T0)
    assert client_view(live, tmp_path / "fresh2", pinned) == EXPECTED


def _forge_timestamp(repo: Path, signer: Signer) -> None:
    """A well-formed timestamp v+1 over the current snapshot, signed by ``signer`` only."""
    current = Metadata[Timestamp].from_bytes((repo / "metadata" / "timestamp.json").read_bytes())
    forged = Metadata(
        Timestamp(
            version=current.signed.version + 1,
            expires=datetime.now(UTC).replace(microsecond=0) + timedelta(days=1),
            snapshot_meta=current.signed.snapshot_meta,
        )
    )
    forged.sign(signer)
    (repo / "metadata" / "timestamp.json").write_bytes(forged.to_bytes())


def test_a_revoked_timestamp_key_can_no_longer_sign(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    revoked = load_role_signers(keys, ("timestamp",))["timestamp"][0]
    seen, device = tmp_path / "seen", tmp_path / "device"
    client_view(live, seen, pinned)
    device_refresh(live, device, pinned)
    # before the rotation the (stolen) key is still trusted: the forgery is accepted
    probe = tmp_path / "probe"
    shutil.copytree(live, probe)
    _forge_timestamp(probe, revoked)
    make_updater(probe, tmp_path / "probe-client", pinned).refresh()

    new_conf = mix(keys, tmp_path / "new.json", timestamp=_doc(other_keys, "timestamp"))
    result = rotate_root(
        live, new_conf, T0, old_signers=all_signers(keys), new_signers=all_signers(new_conf)
    )
    (ts_change,) = [c for c in result.changes if c.role == "timestamp"]
    assert ts_change.revoked == (revoked.public_key.keyid,)
    assert [c.role for c in result.changes if c.changed] == ["timestamp"]
    make_updater(live, seen, pinned).refresh()
    assert device_refresh(live, device, pinned)[-1] == 2

    _forge_timestamp(live, revoked)
    with pytest.raises(UnsignedMetadataError, match="timestamp"):
        make_updater(live, seen, pinned).refresh()  # a client already on root 2
    with pytest.raises(UnsignedMetadataError, match="timestamp"):
        make_updater(live, tmp_path / "fresh", pinned).refresh()  # pinned to root 1
    with pytest.raises(MetadataError, match=r"bad signature.*timestamp"):
        device_refresh(live, device, pinned)
    with pytest.raises(UntrustedRepositoryError, match="published timestamp"):
        refresh(live, load_role_signers(new_conf, ("snapshot", "timestamp")), T0)


def test_a_rotation_without_the_old_root_threshold_is_refused(
    live: Path, keys: KeyConfig, other_keys: KeyConfig
) -> None:
    """Repository write access plus fresh keys must not be able to take over root."""
    before = _files(live)
    refused = r"root v2: expected 2 valid signature\(s\) from keys in root v1, found 0"
    with pytest.raises(ThresholdError, match=refused):
        rotate_root(live, other_keys, T0, old_signers={}, new_signers=all_signers(other_keys))
    one_old = {"root": all_signers(keys)["root"][:1]}
    with pytest.raises(ThresholdError, match="from keys in root v1, found 1"):
        rotate_root(live, other_keys, T0, old_signers=one_old, new_signers=all_signers(other_keys))
    assert _files(live) == before


def test_a_rotation_without_the_new_root_threshold_is_refused(
    live: Path, keys: KeyConfig, other_keys: KeyConfig
) -> None:
    """The new root must prove its own keys work (TUF 5.3.5), or devices would be stuck."""
    before = _files(live)
    new_signers = all_signers(other_keys)
    new_signers["root"] = []
    with pytest.raises(ThresholdError, match="from keys in root v2, found 0"):
        rotate_root(live, other_keys, T0, old_signers=all_signers(keys), new_signers=new_signers)
    new_signers = all_signers(other_keys)
    new_signers["snapshot"] = all_signers(keys)["snapshot"]  # old key for a rotated-out role
    with pytest.raises(ThresholdError, match=r"snapshot v3.*root v2"):
        rotate_root(live, other_keys, T0, old_signers=all_signers(keys), new_signers=new_signers)
    assert _files(live) == before


def test_rotation_when_an_old_online_key_is_lost_publishes_root_first_and_resumes(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    old_root_only = {"root": all_signers(keys)["root"]}
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(live, probe)
    result = rotate_root(
        probe, other_keys, T0, old_signers=old_root_only,
        new_signers=all_signers(other_keys), disk=counting,
    )  # fmt: skip
    assert not result.bridged and "not bridged" in result.warnings[0]
    assert result.written[:2] == ("2.root.json", "root.json")
    assert client_view(probe, tmp_path / "c0", pinned) == EXPECTED

    # a crash after root 2 landed but before the new timestamp: clients fail, rerun resumes
    root_done = counting.effects.index(
        "fsync dir metadata", counting.effects.index("rename root.json")
    )
    work = tmp_path / "crash" / "repo"
    shutil.copytree(live, work)
    with pytest.raises(PublishError):
        rotate_root(
            work, other_keys, T0, old_signers=old_root_only,
            new_signers=all_signers(other_keys), disk=FailingDisk(root_done + 1),
        )  # fmt: skip
    with pytest.raises(UnsignedMetadataError):
        client_view(work, tmp_path / "c1", pinned)
    with pytest.raises(UntrustedRepositoryError) as refused:
        load_state(work)
    assert "rerun it with the same key configurations and --resume" in refused.value.diagnostic()
    with pytest.raises(UntrustedRepositoryError) as refused:  # resuming is a decision
        rotate_root(
            work, other_keys, T0, old_signers=old_root_only, new_signers=all_signers(other_keys)
        )
    assert "interrupted" in refused.value.message and "--resume" in refused.value.diagnostic()
    resumed = rotate_root(
        work, other_keys, T0, old_signers=old_root_only,
        new_signers=all_signers(other_keys), resume=True,
    )  # fmt: skip
    assert (resumed.old_root_version, resumed.root_version) == (1, 2)
    assert "resumed" in resumed.warnings[0]
    assert resumed.written == ("3.targets.json", "3.snapshot.json", "timestamp.json")
    assert client_view(work, tmp_path / "c2", pinned) == EXPECTED
    # resuming towards another key set than the interrupted run is refused
    w2 = tmp_path / "crash2" / "repo"
    shutil.copytree(live, w2)
    with pytest.raises(PublishError):
        rotate_root(
            w2, other_keys, T0, old_signers=old_root_only,
            new_signers=all_signers(other_keys), disk=FailingDisk(root_done + 1),
        )  # fmt: skip
    with pytest.raises(RepositoryStateError, match="keys differ from"):
        rotate_root(
            w2, keys, T0, old_signers=all_signers(keys), new_signers=all_signers(keys),
            resume=True,
        )  # fmt: skip
    with pytest.raises(UsageError, match="nothing to resume"):
        rotate_root(
            live, other_keys, T0, old_signers=all_signers(keys),
            new_signers=all_signers(other_keys), resume=True,
        )  # fmt: skip


def test_a_lost_root_key_is_survivable_while_the_threshold_holds(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    old_root = _doc(keys, "root")
    spare = _doc(other_keys, "root")["keys"][0]
    three = {"threshold": 2, "keys": [*old_root["keys"], spare]}
    conf3 = mix(keys, tmp_path / "k3.json", root=three)
    rotate_root(live, conf3, T0, old_signers=all_signers(keys), new_signers=all_signers(conf3))
    # root key #1 is lost: the other two still meet 2-of-3; replace it with a fresh one
    lost = keys.role("root").keys[0].keyid
    still = [s for s in all_signers(conf3)["root"] if s.public_key.keyid != lost]
    replacement = _doc(other_keys, "root")["keys"][1]
    conf4 = mix(
        keys, tmp_path / "k4.json",
        root={"threshold": 2, "keys": [three["keys"][1], spare, replacement]},
    )  # fmt: skip
    result = rotate_root(
        live, conf4, T0, old_signers={"root": still, **{r: all_signers(keys)[r] for r in
        ("targets", "snapshot", "timestamp")}}, new_signers=all_signers(conf4),
    )  # fmt: skip
    (root_change,) = [c for c in result.changes if c.role == "root"]
    assert root_change.revoked == (lost,)
    assert result.root_version == 3 and result.bridged
    assert client_view(live, tmp_path / "fresh", pinned) == EXPECTED


def test_renewing_an_expiring_root_is_a_rotation_to_the_same_keys(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    later = T0 + timedelta(days=1)
    result = rotate_root(
        live, keys, later, old_signers=all_signers(keys), new_signers=all_signers(keys)
    )
    assert not any(c.changed for c in result.changes) and result.bridged
    assert load_state(live).root.signed.expires == later + timedelta(days=365)
    assert client_view(live, tmp_path / "fresh", root_bytes(live)) == EXPECTED


def test_a_crash_at_any_write_of_a_rotation_leaves_a_valid_repository(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path
) -> None:
    pinned = root_bytes(live)
    old, new = all_signers(keys), all_signers(other_keys)
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(live, probe)
    rotate_root(probe, other_keys, T0, old_signers=old, new_signers=new, disk=counting)
    total = len(counting.effects)
    assert total >= 15, counting.effects
    seen = tmp_path / "seen"
    client_view(live, seen, pinned)
    for k in range(total):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(live, work)
        with pytest.raises(PublishError):
            rotate_root(work, other_keys, T0, old_signers=old, new_signers=new, disk=FailingDisk(k))
        what = counting.effects[k]
        # a client at root 1: fresh, and one that saw the previous state
        assert client_view(work, tmp_path / f"fresh-{k}", pinned) == EXPECTED, what
        cont = tmp_path / f"cont-{k}"
        shutil.copytree(seen, cont)
        make_updater(work, cont, pinned).refresh()
        st = load_state(work)
        if st.root.signed.version == 2:  # a client already at root 2
            got = client_view(work, tmp_path / f"at2-{k}", st.root_bytes)
            assert got == EXPECTED, what
        # the rerun completes on top of whatever the crash left
        rerun = rotate_root(work, other_keys, T0, old_signers=old, new_signers=new)
        assert rerun.root_version in (2, 3), what
        assert client_view(work, tmp_path / f"rerun-{k}", pinned) == EXPECTED, what


# --- command line ------------------------------------------------------------------------------


def test_cli_rotate_root_revokes_a_key(
    live: Path, keys: KeyConfig, other_keys: KeyConfig, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    new_conf = mix(keys, tmp_path / "new.json", snapshot=_doc(other_keys, "snapshot"))
    code, out, err = _run(
        capsys, "repo", "rotate-root", str(live), "--old-keys", str(keys.source),
        "--new-keys", str(new_conf.source), "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["root_version"] == 2 and doc["bridged"] is True
    assert doc["roles"]["snapshot"]["revoked"] == sorted(keys.role("snapshot").keyids)
    assert doc["written"][-2:] == ["2.root.json", "root.json"]
    # the old configuration can no longer refresh: its snapshot key was revoked
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", str(keys.source))
    assert code == 3 and "snapshot" in err and "Traceback" not in err
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", str(new_conf.source))
    assert code == 0, err


def test_cli_rotate_root_with_a_foreign_old_root_is_refused(
    live: Path, other_keys: KeyConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(live)
    code, out, err = _run(
        capsys, "repo", "rotate-root", str(live), "--old-keys", str(other_keys.source),
        "--new-keys", str(other_keys.source),
    )  # fmt: skip
    assert code == 3 and out == ""
    assert "root v2: expected 2 valid signature(s) from keys in root v1" in err
    assert _files(live) == before
