"""A delegation through a ceremony: ``repo delegate --stage`` → each holder signs what their key
is listed for (targets holders the targets, the product key the product role and its bins) →
``repo publish``, and every refusal: below threshold, a key listed for no document, a signature
of a key not listed for its document, a file altered after signing, a stale change.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets

from repo.ceremony import (
    publish_file,
    read_staged,
    sign_file,
    stage_delegation_file,
    status_file,
)
from repo.delegation import DelegationSpec, product_view
from repo.errors import (
    ExpiryMarginError,
    StagedChangeError,
    StagedSignatureError,
    StaleChangeError,
    ThresholdError,
)
from repo.keys import KeyConfig, load_signers
from repo.repository import init, load_role_signers, open_transaction
from repo.roles import ONLINE_ROLES
from repo.state import load_state
from tests.helpers_delegation import blob_target, product_key_file, product_keys
from tests.helpers_repo import NOW, make_updater, root_bytes
from tests.repo.test_repo_rotate import mix

PRODUCT = "edge-gw"


@pytest.fixture
def team(keys: KeyConfig, tmp_path: Path) -> KeyConfig:
    """The demo keys with a 2-of-3 targets role (three offline holders)."""
    holders = json.loads(product_key_file(tmp_path / "t", "targets", "xyz", 2).read_text())
    entry = {"threshold": holders["threshold"], "keys": holders["keys"]}
    return mix(keys, tmp_path / "t" / "keys.json", targets=entry)


@pytest.fixture
def repo2(tmp_path: Path, team: KeyConfig) -> Path:
    repo = tmp_path / "repo"
    init(repo, team, NOW)
    return repo


def uri(conf: KeyConfig, role: str, i: int = 0) -> str:
    return conf.role(role).keys[i].uri


def files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "metadata").iterdir())}


def _stage(repo: Path, pk: KeyConfig, out: Path, bins: int = 4) -> None:
    stage_delegation_file(
        repo, DelegationSpec(PRODUCT, pk.role(PRODUCT), bins=bins, head=2), out, NOW
    )


def test_a_delegation_staged_signed_by_each_holder_in_turn_publishes_and_releases(
    repo2: Path, team: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    staged = tmp_path / "delegate.json"
    _stage(repo2, pk, staged)
    doc = json.loads(staged.read_bytes())
    assert doc["otakit_staged"] == 2 and doc["change"] == "delegation"
    assert [d["role"] for d in doc["delegated"]] == [PRODUCT] + [
        f"{PRODUCT}-bin-{i}" for i in range(4)
    ]
    before = files(repo2)

    first = sign_file(staged, uri(team, "targets", 0))
    assert first.signed == ("targets v2",)
    with pytest.raises(ThresholdError, match="targets v2: expected 2"):
        publish_file(staged, repo2, [team], NOW)
    assert files(repo2) == before

    product = sign_file(staged, uri(pk, PRODUCT, 0))
    assert product.signed == (f"{PRODUCT} v1", *(f"{PRODUCT}-bin-{i} v1" for i in range(4)))
    status = status_file(staged, repo2)
    assert not status.ready
    by_role = {d.role: d for d in status.documents}
    assert by_role[PRODUCT].complete and by_role[f"{PRODUCT}-bin-3"].complete
    (need,) = by_role["targets"].authorities
    assert (len(need.signed), need.threshold) == (1, 2)
    assert by_role[PRODUCT].authorities[0].authority == "targets v2"
    assert by_role[f"{PRODUCT}-bin-0"].authorities[0].authority == f"{PRODUCT} v1"

    sign_file(staged, uri(team, "targets", 2))
    assert status_file(staged, repo2).ready
    result = publish_file(staged, repo2, [team], NOW)
    assert result.written[0] == "2.targets.json" and result.written[-1] == "timestamp.json"
    assert f"1.{PRODUCT}.json" in result.written and len(result.written) == 1 + 5 + 2

    st = load_state(repo2)
    view = product_view(st, PRODUCT)
    assert view is not None and view.succinct() is not None
    # the product CI releases with its key alone, and a client follows through the bins
    signers = {**load_role_signers(team, ONLINE_ROLES), PRODUCT: load_signers(pk, PRODUCT)}
    with open_transaction(repo2) as tx:
        tf, src = blob_target(tmp_path / "src", PRODUCT, "2.0")
        tx.add_target(tf, src)
        tx.commit(signers, NOW)
    updater = make_updater(repo2, tmp_path / "client", root_bytes(repo2))
    updater.refresh()
    assert updater.get_targetinfo(tf.path) is not None

    # the same file again is stale (its targets is now the published one's predecessor)
    with pytest.raises(StaleChangeError):
        publish_file(staged, repo2, [team], NOW)


def _ready(repo: Path, team: KeyConfig, pk: KeyConfig, staged: Path) -> None:
    _stage(repo, pk, staged, bins=2)
    for u in (uri(team, "targets", 0), uri(team, "targets", 1), uri(pk, PRODUCT, 0)):
        sign_file(staged, u)
    assert status_file(staged, repo).ready


def _edit(staged: Path, change: Any) -> None:
    doc = json.loads(staged.read_bytes())
    change(doc)
    staged.write_text(json.dumps(doc))


def test_a_key_not_authorised_for_a_document_cannot_sign_it(
    repo2: Path, team: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    other = product_keys(tmp_path / "pk", "other", "b")
    staged = tmp_path / "delegate.json"
    _ready(repo2, team, pk, staged)
    before = files(repo2)
    # a key listed for none of the documents is refused by repo sign ...
    with pytest.raises(StagedChangeError, match="listed for none"):
        sign_file(staged, uri(other, "other", 0))
    # ... and a targets holder's signature carried onto the product role is refused at
    # publish (its key is not the product's)
    targets_signer = load_signers(team, "targets")[0]
    assert isinstance(targets_signer, CryptoSigner)

    def forge(doc: dict[str, Any]) -> None:
        role = doc["delegated"][0]["metadata"]
        sig = targets_signer.sign(
            Metadata[Targets].from_dict(json.loads(json.dumps(role))).signed_bytes
        )
        role["signatures"].append(sig.to_dict())

    _edit(staged, forge)
    with pytest.raises(StagedSignatureError, match="not listed for it"):
        publish_file(staged, repo2, [team], NOW)
    assert files(repo2) == before


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda d: d["documents"][0]["signed"], id="targets"),
        pytest.param(lambda d: d["delegated"][0]["metadata"]["signed"], id="product-role"),
        pytest.param(lambda d: d["delegated"][2]["metadata"]["signed"], id="bin"),
    ],
)
def test_a_staged_file_altered_after_signing_is_refused(
    repo2: Path, team: KeyConfig, tmp_path: Path, where: Any
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    staged = tmp_path / "delegate.json"
    _ready(repo2, team, pk, staged)
    before = files(repo2)
    _edit(staged, lambda d: where(d).update(expires="2099-01-01T00:00:00Z"))
    with pytest.raises(StagedSignatureError, match="do not verify"):
        publish_file(staged, repo2, [team], NOW)
    assert files(repo2) == before


def test_a_delegated_document_out_of_place_is_a_malformed_file(
    repo2: Path, team: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    staged = tmp_path / "delegate.json"
    _stage(repo2, pk, staged, bins=2)
    cases = [
        (lambda d: d["delegated"].reverse(), "product role first"),
        (lambda d: d["delegated"][1].update(role="edge-gw-bin-9"), "edge-gw-bin-9"),
        (lambda d: d["delegated"][0].update(role="other"), "'other'"),
        (lambda d: d.pop("delegated"), "only it carries"),
        (lambda d: d.update(otakit_staged=1), "unexpected fields"),
    ]
    good = staged.read_bytes()
    for change, says in cases:
        staged.write_bytes(good)
        _edit(staged, change)
        with pytest.raises(StagedChangeError, match=says):
            read_staged(staged)


def test_a_release_of_the_product_since_staging_makes_a_re_key_stale(
    repo2: Path, team: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    first = tmp_path / "first.json"
    _ready(repo2, team, pk, first)
    publish_file(first, repo2, [team], NOW)
    new = product_keys(tmp_path / "pk", PRODUCT, "b")
    rekey = tmp_path / "rekey.json"
    _ready(repo2, team, new, rekey)
    signers = {**load_role_signers(team, ONLINE_ROLES), PRODUCT: load_signers(pk, PRODUCT)}
    with open_transaction(repo2) as tx:  # the product CI releases meanwhile
        tf, src = blob_target(tmp_path / "src", PRODUCT, "2.0")
        tx.add_target(tf, src)
        tx.commit(signers, NOW)
    problems = status_file(rekey, repo2).problems
    assert any("changed since staging" in p for p in problems)
    with pytest.raises(StaleChangeError, match=f"{PRODUCT}: the change holds v2"):
        publish_file(rekey, repo2, [team], NOW)


def test_a_delegation_signed_too_long_ago_to_stay_valid_is_not_published(
    repo2: Path, team: KeyConfig, tmp_path: Path
) -> None:
    pk = product_keys(tmp_path / "pk", PRODUCT, "a")
    staged = tmp_path / "delegate.json"
    _ready(repo2, team, pk, staged)
    before = files(repo2)
    with pytest.raises(ExpiryMarginError, match="targets v2: expected to stay valid"):
        publish_file(staged, repo2, [team], NOW + timedelta(days=90, hours=12))
    assert files(repo2) == before
