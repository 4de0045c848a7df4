"""The device's delegation search (verifier/tuf/delegations.py, TufClient.refresh): TUF's
pre-order depth-first order, terminating roles, path patterns, the bound on roles visited,
forged product roles, hash bins found by path only, and the stored delegated roles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from tests.verifier.conftest import NOW, World, evolve, make_world
from tests.verifier.repo_sim import compress, full_info
from verifier.effects import RealDisk
from verifier.errors import InternalError, TrustedMetadataError
from verifier.plan import Candidate
from verifier.state import StatePaths
from verifier.tuf.client import TufClient, TufLimits, trusted_candidates
from verifier.tuf.delegations import Visit, walk_roles


class Tree:
    """Delegated roles on top of a ``RepoSim``: each role signed by its own key."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.sim = w.sim
        self.roles: dict[str, Metadata[Targets]] = {"targets": self.sim.targets}
        self.signers: dict[str, CryptoSigner] = {}

    def delegate(
        self,
        parent: str,
        name: str,
        paths: list[str] | None = None,
        *,
        terminating: bool = False,
        hash_prefixes: list[str] | None = None,
        signer: CryptoSigner | None = None,
    ) -> None:
        s = signer or CryptoSigner.generate_ed25519()
        self.signers[name] = s
        t = self.roles[parent].signed
        if t.delegations is None:
            t.delegations = Delegations(keys={}, roles={})
        assert t.delegations.roles is not None
        t.delegations.keys[s.public_key.keyid] = s.public_key
        t.delegations.roles[name] = DelegatedRole(
            name, [s.public_key.keyid], 1, terminating, paths, hash_prefixes
        )
        self.roles[name] = Metadata(Targets(expires=self.sim.targets.signed.expires))

    def bins(self, parent: str, prefix: str, bit_length: int) -> SuccinctRoles:
        s = CryptoSigner.generate_ed25519()
        sr = SuccinctRoles([s.public_key.keyid], 1, bit_length, prefix)
        self.roles[parent].signed.delegations = Delegations(
            keys={s.public_key.keyid: s.public_key}, roles=None, succinct_roles=sr
        )
        for name in sr.get_roles():
            self.signers[name] = s
            self.roles[name] = Metadata(Targets(expires=self.sim.targets.signed.expires))
        return sr

    def add(self, role: str, image: bytes, version: str, product: str = "edge-gw") -> TargetFile:
        tf = self.sim.add_full(image, version, product=product)
        if role != "targets":  # moved from top-level to the role (the bytes stay served)
            del self.sim.targets.signed.targets[tf.path]
            self.roles[role].signed.targets[tf.path] = tf
        return tf

    def publish(self) -> None:
        for name, md in self.roles.items():
            if name == "targets":
                continue
            md.signed.version += 1
            md.signatures.clear()
            md.sign(self.signers[name])
            v = md.signed.version
            self.sim.files[f"metadata/{v}.{name}.json"] = md.to_bytes()
            self.sim.snapshot.signed.meta[f"{name}.json"] = MetaFile(v)
        self.sim.publish()


def _client(w: World, limits: TufLimits | None = None) -> TufClient:
    return TufClient(
        StatePaths(w.state),
        "http://repo.test/metadata/",
        "http://repo.test/targets/",
        RealDisk(),
        now=NOW,
        fetcher=w.sim,
        limits=limits,
    )


def _role_requests(w: World) -> list[str]:
    out = []
    for key, _ in w.sim.requests:
        name = key.removeprefix("metadata/")
        if key.startswith("metadata/") and name.split(".")[1] not in (
            "root",
            "targets",
            "snapshot",
            "json",
        ):
            out.append(name.split(".", 1)[1].removesuffix(".json"))
    return out


def _versions(cs: list[Candidate]) -> list[str]:
    return sorted(str(c.info.version) for c in cs)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(make_world(tmp_path))


def test_walk_is_preorder_depth_first_in_listed_order() -> None:
    """targets -> [A -> [A1], B]: visited targets, A, A1, B (ngclient's order)."""
    top = Targets()
    a, a1, b = Targets(), Targets(), Targets()
    pat = ["edge-gw/*/*"]
    top.delegations = Delegations(
        {}, {"A": DelegatedRole("A", [], 1, False, pat), "B": DelegatedRole("B", [], 1, False, pat)}
    )
    a.delegations = Delegations({}, {"A1": DelegatedRole("A1", [], 1, False, pat)})
    roles = {"A": a, "A1": a1, "B": b}
    calls: list[tuple[str, str]] = []

    def load(name: str, parent: str) -> Targets:
        calls.append((name, parent))
        return roles[name]

    visits = walk_roles(top, load, "edge-gw", 8)
    assert [v.name for v in visits] == ["targets", "A", "A1", "B"]
    assert calls == [("A", "targets"), ("A1", "A"), ("B", "targets")]
    assert isinstance(visits[1], Visit) and visits[2].parent == "A"


def test_delegated_targets_are_candidates_and_persist_offline(tree: Tree) -> None:
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    tree.add("targets", tree.w.v1, "1.0")
    tree.add("edge-gw", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0", "2.0"]
    assert _versions(trusted_candidates(StatePaths(tree.w.state), "edge-gw")) == ["1.0", "2.0"]
    # a second refresh with nothing new reads the stored role: no download
    tree.w.sim.requests.clear()
    with _client(tree.w) as c:
        c.refresh("edge-gw")
    assert _role_requests(tree.w) == []


def test_terminating_role_ends_the_search(tree: Tree) -> None:
    tree.delegate("targets", "first", ["edge-gw/*/*"], terminating=True)
    tree.delegate("targets", "second", ["edge-gw/*/*"])
    tree.add("first", tree.w.v1, "1.0")
    tree.add("second", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0"]
    assert "second" not in _role_requests(tree.w)
    assert _versions(trusted_candidates(StatePaths(tree.w.state), "edge-gw")) == ["1.0"]


def test_terminating_role_for_some_versions_only_does_not_hide_the_rest(tree: Tree) -> None:
    """TUF stops at a terminating role only for the paths it matches: one for 1.* must not
    hide 2.0 listed by the next role."""
    tree.delegate("targets", "old", ["edge-gw/1.*/*"], terminating=True)
    tree.delegate("targets", "new", ["edge-gw/*/*"])
    tree.add("old", tree.w.v1, "1.0")
    tree.add("new", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0", "2.0"]


def test_non_terminating_role_lets_the_search_go_on(tree: Tree) -> None:
    tree.delegate("targets", "first", ["edge-gw/*/*"])
    tree.delegate("targets", "second", ["edge-gw/*/*"])
    tree.add("first", tree.w.v1, "1.0")
    tree.add("second", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0", "2.0"]
    assert _role_requests(tree.w) == ["first", "second"]


def test_only_roles_whose_patterns_admit_the_product_are_read(tree: Tree) -> None:
    tree.delegate("targets", "cam", ["cam/*/*"], terminating=True)
    tree.delegate("targets", "flat", ["*"])  # one segment: never PRODUCT/VERSION/FILE
    # a hash-prefixed role is looked up by path only: given prefixes the new path's hash
    # does not start with, not even the path resolution reads it
    digit = hashlib.sha256(b"edge-gw/2.0/full.img.zst").hexdigest()[0]
    tree.delegate("targets", "hashed", hash_prefixes=[h for h in "0123456789abcdef" if h != digit])
    tree.delegate("targets", "edge-gw", ["edge-*/*/*"])
    tree.add("cam", tree.w.v1, "7.0", product="cam")
    tree.add("edge-gw", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["2.0"]
    assert _role_requests(tree.w) == ["edge-gw"]


def test_the_bound_on_roles_visited_limits_the_search(tree: Tree) -> None:
    parent = "targets"
    for i in range(5):
        tree.delegate(parent, f"r{i}", ["edge-gw/*/*"])
        tree.add(f"r{i}", evolve(tree.w.v1, 10 + i), f"{i + 1}.0")
        parent = f"r{i}"
    tree.publish()
    with _client(tree.w, TufLimits(max_delegations=3)) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0", "2.0", "3.0"]
    assert _role_requests(tree.w) == ["r0", "r1", "r2"]  # r3, r4 never fetched


def test_a_forged_product_role_listing_foreign_paths_is_ignored(tree: Tree) -> None:
    """cam's key signs cam's role, which lists an edge-gw image: TUF resolves that path
    through the top-level delegations, which never grant it to cam."""
    tree.delegate("targets", "cam", ["cam/*/*"], terminating=True)
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    tree.add("edge-gw", tree.w.v1, "1.0")
    tree.add("cam", evolve(tree.w.v1, 9), "9.0")  # an edge-gw 9.0 image, listed by cam
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh()) == ["1.0"]  # every role walked, the forgery ignored
        assert c._updater.get_targetinfo("edge-gw/9.0/full.img.zst") is None
    assert _versions(trusted_candidates(StatePaths(tree.w.state))) == ["1.0"]


def test_hash_bins_are_found_by_path_and_not_downloaded_on_refresh(tree: Tree) -> None:
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    sr = tree.bins("edge-gw", "edge-gw-bin", 2)
    old = tree.add("targets", tree.w.v1, "1.0")
    del tree.sim.targets.signed.targets[old.path]
    tree.roles[sr.get_role_for_target(old.path)].signed.targets[old.path] = old
    tree.add("edge-gw", evolve(tree.w.v1, 2), "2.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["2.0"]
        assert _role_requests(tree.w) == ["edge-gw"]  # no bin read by the refresh
        found = c._updater.get_targetinfo(old.path)
        assert found is not None and found.hashes == old.hashes
        assert _role_requests(tree.w) == ["edge-gw", sr.get_role_for_target(old.path)]


def test_a_delegated_role_signed_by_another_key_fails_the_refresh(tree: Tree) -> None:
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    tree.add("edge-gw", tree.w.v1, "1.0")
    tree.publish()
    with _client(tree.w) as c:
        c.refresh("edge-gw")
    tree.add("edge-gw", evolve(tree.w.v1, 2), "2.0")
    tree.signers["edge-gw"] = CryptoSigner.generate_ed25519()  # not the delegated key
    tree.publish()
    with _client(tree.w) as c, pytest.raises(Exception, match="edge-gw"):
        c.refresh("edge-gw")
    # nothing was committed: the stored set is still the previous, consistent one
    assert _versions(trusted_candidates(StatePaths(tree.w.state), "edge-gw")) == ["1.0"]


def test_a_tampered_stored_delegated_role_is_refused_offline(tree: Tree) -> None:
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    tree.add("edge-gw", tree.w.v1, "1.0")
    tree.publish()
    with _client(tree.w) as c:
        c.refresh("edge-gw")
    stored = next((tree.w.state / "metadata").glob("*.edge-gw.json"))
    md = Metadata[Targets].from_bytes(stored.read_bytes())
    md.signed.targets.clear()  # drop the listing, keep the old signature
    stored.write_bytes(md.to_bytes())
    with pytest.raises(TrustedMetadataError):
        trusted_candidates(StatePaths(tree.w.state), "edge-gw")


def test_search_fails_closed_without_ngclients_loader(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.publish()
    with _client(tree.w) as c:
        monkeypatch.setattr(c._updater, "_load_targets", None)
        with pytest.raises(InternalError, match="_load_targets"):
            c.refresh("edge-gw")
    assert tree.w.sim.requests == []  # refused before anything was downloaded


def test_full_info_helper_is_the_simulators() -> None:  # keeps imports honest
    assert full_info(b"x", "1.0").product == "edge-gw" and compress(b"x")


def test_offline_reads_search_the_devices_own_product_past_many_others(tree: Tree) -> None:
    """With more products than ``max_delegations``, status and verify-installed must look
    for the device's product, not walk the first roles of every product (regression: they
    walked all products and missed the device's own)."""
    from verifier.report import verify_installed

    for i in range(10):
        tree.delegate("targets", f"cam{i}", [f"cam{i}/*/*"], terminating=True)
    tree.delegate("targets", "edge-gw", ["edge-gw/*/*"], terminating=True)
    tree.add("edge-gw", tree.w.v1, "1.0")
    tree.publish()
    with _client(tree.w) as c:
        assert _versions(c.refresh("edge-gw")) == ["1.0"]
    assert _role_requests(tree.w) == ["edge-gw"]
    report = verify_installed(tree.w.device())
    assert report.ok and str(report.version) == "1.0"
