"""Rotation of every top-level role through ceremonies, with a real device following along.

One repository served by nginx, one device (``otakit-device`` in subprocesses, file-backed
slots) that was initialised pinned to ``1.root.json`` on the demo keys. Each change goes
through ``otakit repo stage`` → ``otakit repo sign`` once per holder, each with their own
key file → ``otakit repo publish``; after each, a release is signed with the keys now in
force and the device, still pinned to root 1, updates through the change and installs it:

1. rotate the targets key (bridged: the old targets key co-signs targets N+1);
2. rotate the snapshot key (bridged: the old online keys are at hand at publish);
3. rotate the timestamp key (root first: only the new online keys are given);
4. revoke one of the two root keys (threshold 2 → 1);
5. add a new root key and raise the threshold again (1 → 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repo.keys import KeyConfig, load_key_config
from repo.nginx import nginx_serving
from signer.demo_image import DemoImageSpec, build_image
from signer.keygen import generate_key_set
from tests.e2e.test_end_to_end import HW, PRODUCT, run, sha, status
from tests.repo.test_repo_demo_keys import random_key
from tests.repo.test_repo_rotate import _doc, mix
from verifier.effects import RealDisk
from verifier.tuf.store import TrustedStore


def _release(repo: Path, keys: KeyConfig, work: Path, v: int) -> Path:
    img = work / f"v{v}.img"
    img.write_bytes(build_image(DemoImageSpec(version=v, files=40, size=2 << 20)))
    run(
        "otakit", "release", repo, img, "--keys", keys.source, "--product", PRODUCT,
        "--version", f"{v}.0", "--hardware", HW, "--deltas", "0",
    )  # fmt: skip
    return img


def _ceremony(
    repo: Path, work: Path, name: str, new: KeyConfig, holders: list[str], online: list[KeyConfig]
) -> dict[str, Any]:
    staged = work / f"{name}.staged.json"
    run("otakit", "repo", "stage", repo, "root", "--keys", new.source, "--out", staged)
    for uri in holders:  # each holder signs on their own machine: the file travels
        travelled = work / f"{name}.at-holder.json"
        travelled.write_bytes(staged.read_bytes())
        run("otakit", "repo", "sign", travelled, "--key", uri)
        staged.write_bytes(travelled.read_bytes())
    st = json.loads(run("otakit", "repo", "sign-status", staged, "--repo", repo, "--json").stdout)
    assert st["ready"] is True, st
    argv: list[str | Path] = ["otakit", "repo", "publish", staged, repo, "--json"]
    for conf in online:
        argv += ["--keys", conf.source]
    doc = json.loads(run(*argv).stdout)
    assert isinstance(doc, dict)
    return doc


def _trusted_root_version(state: Path) -> int:
    """The newest root the device stored (it keeps every verified one, by version)."""
    return max(v for v, _ in TrustedStore(state / "metadata", RealDisk()).root_versions())


def test_a_device_follows_the_rotation_of_every_role_and_installs_releases_signed_after(
    tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run("otakit", "keys", "generate-demo", tmp_path / "keys")
    k0 = load_key_config(tmp_path / "keys" / "keys.json")
    fresh = generate_key_set(tmp_path / "fresh", random_key)  # the new holders' key files
    repo = tmp_path / "repo"
    run("otakit", "repo", "init", repo, "--keys", k0.source)
    v1 = _release(repo, k0, work, 1)

    def key(conf: KeyConfig, role: str, i: int = 0) -> str:
        return conf.role(role).keys[i].uri

    r1, r2 = k0.role("root").keys
    k1 = mix(k0, tmp_path / "k1" / "keys.json", targets=_doc(fresh, "targets"))
    k2 = mix(k1, tmp_path / "k2" / "keys.json", snapshot=_doc(fresh, "snapshot"))
    k3 = mix(k2, tmp_path / "k3" / "keys.json", timestamp=_doc(fresh, "timestamp"))
    r1_doc = _doc(k0, "root")["keys"][0]
    k4 = mix(k3, tmp_path / "k4" / "keys.json", root={"threshold": 1, "keys": [r1_doc]})
    new_root = _doc(fresh, "root")["keys"][0]
    k5 = mix(k4, tmp_path / "k5" / "keys.json", root={"threshold": 2, "keys": [r1_doc, new_root]})
    both_root = [r1.uri, r2.uri]
    steps = [
        ("targets", k1, [*both_root, key(k1, "targets"), key(k0, "targets")], [k1], True),
        ("snapshot", k2, both_root, [k2, k1], True),
        ("timestamp", k3, both_root, [k3], False),
        ("revoke-root-key", k4, both_root, [k4], True),
        ("raise-threshold", k5, [r1.uri, key(k5, "root", 1)], [k5], True),
    ]

    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        state = tmp_path / "device"
        slots = {"a": tmp_path / "slot-a.img", "b": tmp_path / "slot-b.img"}
        slots["a"].write_bytes(v1.read_bytes())
        slots["b"].write_bytes(bytes(len(v1.read_bytes())))
        run(
            "otakit-device", "--state", state, "init", "--repo-url", url,
            "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", HW,
            "--slot-a", slots["a"], "--slot-b", slots["b"], "--installed-version", "1.0",
        )  # fmt: skip
        for n, (name, conf, holders, online, bridged) in enumerate(steps, start=2):
            doc = _ceremony(repo, work, name, conf, holders, online)
            assert doc["bridged"] is bridged, (name, doc)
            assert doc["versions"]["root"] == n, (name, doc)
            img = _release(repo, conf, work, n)  # signed with the keys now in force
            booted = status(state)["booted"]
            assert isinstance(booted, str)
            other = "b" if booted == "a" else "a"
            run("otakit-device", "--state", state, "update")
            assert sha(slots[other]) == sha(img), name
            run("otakit-device", "--state", state, "boot")
            run("otakit-device", "--state", state, "mark-good")
            st = status(state)
            assert (st["booted"], st["primary"]) == (other, other), (name, st)
            assert _trusted_root_version(state) == n, name
        drift = json.loads(
            run("otakit-device", "--state", state, "verify-installed", "--json").stdout
        )
        assert drift["ok"] is True and drift["version"] == f"{len(steps) + 1}.0"
