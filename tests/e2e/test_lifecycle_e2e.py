"""Withdraw and prune, for real: the publisher CLI changes a repository served by nginx while
devices (the installed ``otakit-device``, file-backed slots) follow along."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from signer.demo_image import DemoImageSpec, build_image
from tests.e2e.test_end_to_end import HW, PRODUCT, make_device, run, sha, status
from tests.e2e.test_end_to_end import published as published  # the module-scoped fixture

REASON = "bricks rev-B boards"


def keys(published: Path) -> Path:
    return published / "keys" / "keys.json"


def withdraw(repo: Path, published: Path) -> dict[str, object]:
    out = run(
        "otakit", "withdraw", repo, PRODUCT, "2.0", "--keys", keys(published),
        "--reason", REASON, "--json",
    )  # fmt: skip
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def update(state: Path, *args: str) -> dict[str, object]:
    out = run("otakit-device", "--state", state, "update", "--json", *args)
    last = json.loads(out.stdout.splitlines()[-1])
    assert isinstance(last, dict)
    return last


def test_a_release_withdrawn_before_the_device_installs_it_is_not_installed(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    slot_b = tmp_path / "slot-b.img"
    empty = sha(slot_b)
    doc = withdraw(repo, published)
    assert sorted(doc["marked"]) == [
        f"{PRODUCT}/2.0/delta-from-1.0.otd",
        f"{PRODUCT}/2.0/full.img.zst",
    ]
    again = withdraw(repo, published)  # a rerun is safe: nothing is signed twice
    assert again["already_withdrawn"] is True and again["marked"] == []

    last = update(state)
    assert last["event"] == "nothing-to-do" and f"2.0 was withdrawn: {REASON}" in last["message"]
    assert sha(slot_b) == empty  # not a byte written
    st = status(state)
    assert (st["booted"], st["trial"], st["pending"]) == ("a", None, None)
    proc = run("otakit-device", "--state", state, "update", "--version", "2.0", "--json", ok=False)
    assert proc.returncode == 2
    err = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert err["kind"] == "withdrawn-version" and REASON in err["message"]


def test_a_device_running_a_release_that_is_then_withdrawn_is_told_so(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    assert update(state)["event"] == "done"
    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    withdraw(repo, published)

    last = update(state)  # brings the signed withdrawal; nothing to install
    assert last["event"] == "nothing-to-do"
    st = status(state)
    assert st["booted"] == "b"
    slot = st["slots"]["b"]
    assert slot["withdrawn"]["reason"] == REASON
    assert any(f"withdrawn: {REASON}" in w for w in st["warnings"])
    text = run("otakit-device", "--state", state, "status").stdout
    assert f"withdrawn: {REASON}" in text and "[booted, primary, withdrawn]" in text
    vi = run("otakit-device", "--state", state, "verify-installed")
    assert f"withdrawn: {REASON}" in vi.stdout


def _device_on(tmp_path: Path, name: str, url: str, repo: Path, image: Path, version: str) -> Path:
    state = tmp_path / name / "device"
    slot_a, slot_b = tmp_path / name / "slot-a.img", tmp_path / name / "slot-b.img"
    slot_a.parent.mkdir()
    shutil.copyfile(image, slot_a)
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    run(
        "otakit-device", "--state", state, "init", "--repo-url", url,
        "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", HW,
        "--slot-a", slot_a, "--slot-b", slot_b, "--installed-version", version,
    )  # fmt: skip
    return state


def test_after_a_prune_devices_still_update_full_and_by_delta_from_a_kept_base(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    v3 = tmp_path / "v3.img"
    v3.write_bytes(build_image(DemoImageSpec(version=3, files=80, size=4 << 20)))
    run(
        "otakit", "release", repo, v3, "--keys", keys(published), "--product", PRODUCT,
        "--version", "3.0", "--hardware", HW, "--deltas", "1",
    )  # fmt: skip
    on_v1 = _device_on(tmp_path, "d1", url, repo, published / "v1.img", "1.0")
    on_v2 = _device_on(tmp_path, "d2", url, repo, published / "v2.img", "2.0")

    out = run("otakit", "repo", "prune", repo, "--keys", keys(published), "--keep", "1", "--json")
    doc = json.loads(out.stdout)
    assert sorted(doc["removed_targets"]) == [
        f"{PRODUCT}/1.0/full.img.zst", f"{PRODUCT}/2.0/delta-from-1.0.otd",
    ]  # fmt: skip
    assert doc["kept_versions"] == {PRODUCT: ["3.0", "2.0 (base of a kept delta)"]}
    assert len(doc["deleted_files"]) == 2 and doc["published"] is True
    left = sorted(p.name.split(".", 1)[1] for p in (repo / "targets").rglob("*") if p.is_file())
    assert left == ["delta-from-2.0.otd", "full.img.zst", "full.img.zst"]

    done = update(on_v1)
    assert (done["event"], done["version"], done["kind"]) == ("done", "3.0", "full")
    done = update(on_v2)
    assert (done["event"], done["version"], done["kind"]) == ("done", "3.0", "delta")
    for state in (on_v1, on_v2):
        assert sha(state.parent / "slot-b.img") == sha(v3)
