"""``sign_chain``: the one targets → snapshot → timestamp signing path (release, refresh,
rotation), checked on its own: links to exact bytes, thresholds, bridging."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from repo.errors import ThresholdError
from repo.roles import CHAIN_ROLES, TOP_LEVEL_ROLES
from repo.signing import SignedChain, StagedChain, sign_chain
from tests.helpers_repo import NOW

EXPIRES = NOW + timedelta(days=1)


def _root(signers: dict[str, list[Signer]], thresholds: dict[str, int] | None = None) -> Root:
    root = Root(version=1, expires=EXPIRES)
    for role in TOP_LEVEL_ROLES:
        for s in signers.get(role, []):
            root.add_key(s.public_key, role)
        root.roles[role].threshold = (thresholds or {}).get(role, 1)
    return root


def _keys(*roles: str, n: int = 1) -> dict[str, list[Signer]]:
    return {r: [CryptoSigner.generate_ed25519() for _ in range(n)] for r in roles}


def _staged(targets: bool = True) -> StagedChain:
    return StagedChain(
        targets=Targets(version=2, expires=EXPIRES) if targets else None,
        snapshot=Snapshot(
            version=3,
            expires=EXPIRES,
            meta={"targets.json": MetaFile(1), "prod.json": MetaFile(5)},
        ),
        timestamp=Timestamp(version=4, expires=EXPIRES),
    )


def test_each_role_references_the_exact_bytes_of_the_one_before() -> None:
    signers = _keys(*TOP_LEVEL_ROLES)
    chain = sign_chain(_staged(), signers, [_root(signers)])
    assert chain.targets is not None
    snapshot = Metadata[Snapshot].from_bytes(chain.snapshot.data).signed
    entry = snapshot.meta["targets.json"]
    assert entry.version == 2
    assert entry.length == len(chain.targets.data)
    assert entry.hashes == {"sha256": hashlib.sha256(chain.targets.data).hexdigest()}
    assert snapshot.meta["prod.json"].version == 5  # other entries are kept
    timestamp = Metadata[Timestamp].from_bytes(chain.timestamp.data).signed
    assert timestamp.snapshot_meta.version == 3
    assert timestamp.snapshot_meta.length == len(chain.snapshot.data)
    assert timestamp.snapshot_meta.hashes == {
        "sha256": hashlib.sha256(chain.snapshot.data).hexdigest()
    }
    assert [m.role for m in chain.in_publication_order()] == list(CHAIN_ROLES)
    assert chain.unbridged == ()


def test_without_targets_the_published_targets_entry_is_kept() -> None:
    signers = _keys(*TOP_LEVEL_ROLES)
    chain = sign_chain(_staged(targets=False), signers, [_root(signers)])
    assert chain.targets is None
    snapshot = Metadata[Snapshot].from_bytes(chain.snapshot.data).signed
    assert snapshot.meta["targets.json"] == MetaFile(1)
    assert [m.role for m in chain.in_publication_order()] == ["snapshot", "timestamp"]


@pytest.mark.parametrize("role", CHAIN_ROLES)
def test_a_role_below_its_threshold_is_refused(role: str) -> None:
    signers = _keys(*TOP_LEVEL_ROLES, n=2)
    root = _root(signers, {role: 2})
    short = {**signers, role: signers[role][:1]}
    with pytest.raises(ThresholdError, match=rf"{role} v\d+: expected 2 valid signature\(s\)"):
        sign_chain(_staged(), short, [root])
    # the same chain with both keys is accepted
    assert isinstance(sign_chain(_staged(), signers, [root]), SignedChain)


def test_a_signature_by_a_key_root_does_not_list_does_not_count() -> None:
    signers = _keys(*TOP_LEVEL_ROLES)
    strangers = {**signers, "timestamp": [CryptoSigner.generate_ed25519()]}
    with pytest.raises(ThresholdError, match="signed by keys root does not list"):
        sign_chain(_staged(), strangers, [_root(signers)])


def test_every_authority_must_accept_each_role() -> None:
    old, new = _keys(*TOP_LEVEL_ROLES), _keys(*TOP_LEVEL_ROLES)
    with pytest.raises(ThresholdError, match="from keys in root"):
        sign_chain(_staged(), new, [_root(new), _root(old)])


def test_bridge_reports_the_roles_the_old_root_would_refuse() -> None:
    old, new = _keys(*TOP_LEVEL_ROLES), _keys(*TOP_LEVEL_ROLES)
    old_root, new_root = _root(old), _root(new)
    both = {r: [*new[r], *old[r]] for r in CHAIN_ROLES}
    assert sign_chain(_staged(), both, [new_root], bridge=old_root).unbridged == ()
    lost = {**both, "snapshot": new["snapshot"]}  # the old snapshot key is gone
    chain = sign_chain(_staged(), lost, [new_root], bridge=old_root)
    assert chain.unbridged == ("snapshot",)
