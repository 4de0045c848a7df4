"""A device follows a product through delegation and a product-key rotation, for real.

Publisher CLI → nginx → device CLI: the product is delegated to its own key; a release signed
with that key only (the repository's targets key file is absent) reaches the device; the
product key is rotated with ``repo delegate`` and the old key is refused; a release with the
new key reaches the same device, which started before either change.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from repo.nginx import nginx_serving
from signer.demo_image import DemoImageSpec, build_image
from tests.e2e.test_end_to_end import HW, PRODUCT, SECURITY_EXIT, run, sha
from tests.helpers_delegation import product_key_file


def _update_and_commit(state: Path, version: str) -> None:
    out = run("otakit-device", "--state", state, "update", "--json")
    done = [json.loads(line) for line in out.stdout.splitlines() if '"done"' in line][-1]
    assert done["version"] == version
    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")


def test_device_follows_a_delegated_product_through_a_key_rotation(
    tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    keys = tmp_path / "keys"
    run("otakit", "keys", "generate-demo", keys)
    conf = keys / "keys.json"
    repo = tmp_path / "repo"
    run("otakit", "repo", "init", repo, "--keys", conf)
    images = {}
    for v in (1, 2, 3):
        images[v] = tmp_path / f"v{v}.img"
        images[v].write_bytes(build_image(DemoImageSpec(version=v, files=60, size=4 << 20)))
    release = ("otakit", "release", repo)
    opts = ("--product", PRODUCT, "--hardware", HW, "--deltas", "1")
    run(*release, images[1], "--keys", conf, *opts, "--version", "1.0")

    # the product CI: online keys, no targets key at all
    ci = tmp_path / "ci"
    shutil.copytree(keys, ci)
    (ci / "targets-1.pem").unlink()
    key_a = product_key_file(tmp_path / "pk", PRODUCT, "a")
    key_b = product_key_file(tmp_path / "pk", PRODUCT, "b")

    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        state = tmp_path / "device"
        slot_a, slot_b = tmp_path / "slot-a.img", tmp_path / "slot-b.img"
        shutil.copyfile(images[1], slot_a)
        slot_b.write_bytes(bytes(slot_a.stat().st_size))
        run(
            "otakit-device", "--state", state, "init", "--repo-url", url,
            "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT,
            "--hardware", HW, "--slot-a", slot_a, "--slot-b", slot_b,
            "--installed-version", "1.0",
        )  # fmt: skip
        run("otakit-device", "--state", state, "update", ok=True)  # nothing new: 1.0 runs

        delegate = ("otakit", "repo", "delegate", repo, PRODUCT, "--keys", conf)
        out = run(*delegate, "--product-keys", key_a, "--bins", "4", "--head", "2", "--json")
        assert json.loads(out.stdout)["product"] == PRODUCT

        # without its product key a delegated product cannot be released ...
        refused = run(*release, images[2], "--keys", ci / "keys.json", *opts, "--version",
                      "2.0", ok=False)  # fmt: skip
        assert refused.returncode == 2 and "--product-keys" in refused.stderr
        # ... and with it, the targets key is never needed
        run(*release, images[2], "--keys", ci / "keys.json", *opts, "--version", "2.0",
            "--product-keys", key_a)  # fmt: skip
        _update_and_commit(state, "2.0")
        assert sha(slot_b) == sha(images[2])

        # rotate the product key: the old one is refused, the new one publishes
        run(*delegate, "--product-keys", key_b, "--bins", "4", "--head", "2")
        old = run(*release, images[3], "--keys", ci / "keys.json", *opts, "--version", "3.0",
                  "--product-keys", key_a, ok=False)  # fmt: skip
        assert old.returncode == SECURITY_EXIT and "delegated keys" in old.stderr
        run(*release, images[3], "--keys", ci / "keys.json", *opts, "--version", "3.0",
            "--product-keys", key_b)  # fmt: skip
        _update_and_commit(state, "3.0")
        assert sha(slot_a) == sha(images[3])
        drift = run("otakit-device", "--state", state, "verify-installed", "--json")
        report = json.loads(drift.stdout)
        assert report["ok"] is True and report["version"] == "3.0"


def _status(state: Path) -> dict[str, object]:
    doc = json.loads(run("otakit-device", "--state", state, "status", "--json").stdout)
    assert isinstance(doc, dict)
    return doc


def _device(tmp_path: Path, name: str, url: str, repo: Path, image: Path, version: str) -> Path:
    state = tmp_path / name / "device"
    slot_a, slot_b = tmp_path / name / "slot-a.img", tmp_path / name / "slot-b.img"
    slot_a.parent.mkdir()
    shutil.copyfile(image, slot_a)
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    run(
        "otakit-device", "--state", state, "init", "--repo-url", url,
        "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT,
        "--hardware", HW, "--slot-a", slot_a, "--slot-b", slot_b,
        "--installed-version", version,
    )  # fmt: skip
    return state


def test_a_delegated_release_is_withdrawn_with_the_product_key_and_pruned_after(
    tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    """Withdraw and prune of a delegated product, signed by its CI key (the repository's
    targets key file absent for the withdrawal), with two devices following."""
    keys = tmp_path / "keys"
    run("otakit", "keys", "generate-demo", keys)
    conf = keys / "keys.json"
    repo = tmp_path / "repo"
    run("otakit", "repo", "init", repo, "--keys", conf)
    images = {}
    for v in (1, 2, 3, 4):
        images[v] = tmp_path / f"v{v}.img"
        images[v].write_bytes(build_image(DemoImageSpec(version=v, files=60, size=4 << 20)))
    release = ("otakit", "release", repo)
    opts = ("--product", PRODUCT, "--hardware", HW, "--deltas", "1")
    run(*release, images[1], "--keys", conf, *opts, "--version", "1.0")
    ci = tmp_path / "ci"
    shutil.copytree(keys, ci)
    (ci / "targets-1.pem").unlink()
    key_a = product_key_file(tmp_path / "pk", PRODUCT, "a")
    run("otakit", "repo", "delegate", repo, PRODUCT, "--keys", conf, "--product-keys", key_a,
        "--bins", "4", "--head", "2")  # fmt: skip
    product = ("--product-keys", key_a)

    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        on_2 = _device(tmp_path, "d2", url, repo, images[1], "1.0")
        on_1 = _device(tmp_path, "d1", url, repo, images[1], "1.0")
        run(*release, images[2], "--keys", ci / "keys.json", *opts, "--version", "2.0", *product)
        _update_and_commit(on_2, "2.0")

        out = run("otakit", "withdraw", repo, PRODUCT, "2.0", "--keys", ci / "keys.json",
                  "--reason", "bad radio firmware", *product, "--json")  # fmt: skip
        doc = json.loads(out.stdout)
        assert doc["roles"] == [PRODUCT] and len(doc["marked"]) == 2
        # the device running 2.0 is told, the one on 1.0 does not install it
        last = json.loads(
            run("otakit-device", "--state", on_2, "update", "--json").stdout.splitlines()[-1]
        )
        assert last["event"] == "nothing-to-do"
        st = _status(on_2)
        slots = st["slots"]
        assert isinstance(slots, dict) and st["booted"] == "b"
        assert slots["b"]["withdrawn"]["reason"] == "bad radio firmware"
        empty = sha(tmp_path / "d1" / "slot-b.img")
        first = run("otakit-device", "--state", on_1, "update", "--json")
        assert json.loads(first.stdout.splitlines()[-1])["event"] == "nothing-to-do"
        assert _status(on_1)["booted"] == "a"
        assert sha(tmp_path / "d1" / "slot-b.img") == empty  # not a byte written

        for v in (3, 4):
            run(*release, images[v], "--keys", ci / "keys.json", *opts, "--version", f"{v}.0",
                *product)  # fmt: skip
        before = {p for p in (repo / "targets").rglob("*") if p.is_file()}
        # 1.0 is listed by the top-level targets (released before the delegation): the
        # targets key signs its removal, the product key the product role's
        out = run("otakit", "repo", "prune", repo, "--keys", conf, "--keep", "1",
                  "--product-keys", f"{PRODUCT}={key_a}", "--json")  # fmt: skip
        pruned = json.loads(out.stdout)
        assert pruned["kept_versions"][PRODUCT] == ["4.0", "3.0 (base of a kept delta)"]
        assert sorted(pruned["removed_targets"]) == [
            f"{PRODUCT}/1.0/full.img.zst",
            f"{PRODUCT}/2.0/delta-from-1.0.otd",
            f"{PRODUCT}/2.0/full.img.zst",
            f"{PRODUCT}/3.0/delta-from-2.0.otd",
        ]
        after = {p for p in (repo / "targets").rglob("*") if p.is_file()}
        assert after < before and len(after) == 3  # 4.0 full + delta from 3.0, 3.0 full
        # both devices still update: by the kept delta's base or by the full image
        _update_and_commit(on_1, "4.0")
        assert sha(tmp_path / "d1" / "slot-b.img") == sha(images[4])
        _update_and_commit(on_2, "4.0")
        assert sha(tmp_path / "d2" / "slot-a.img") == sha(images[4])


def test_a_delegation_through_a_ceremony_reaches_a_device(
    tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    """2-of-3 targets holders and the product team sign one staged delegation in separate
    steps (the file travels); after publish the product CI releases with its key alone and
    a device pinned to root 1 installs it."""
    run("otakit", "keys", "generate-demo", tmp_path / "keys")
    holders = json.loads(product_key_file(tmp_path / "t", "targets", "xyz", 2).read_text())
    demo = json.loads((tmp_path / "keys" / "keys.json").read_text())
    for entry in demo["roles"].values():
        for k in entry["keys"]:
            k["uri"] = "file2:" + str(tmp_path / "keys" / k["uri"].split(":", 1)[1])
    demo["roles"]["targets"] = {"threshold": 2, "keys": holders["keys"]}
    conf = tmp_path / "t" / "keys.json"
    conf.write_text(json.dumps(demo))
    repo = tmp_path / "repo"
    run("otakit", "repo", "init", repo, "--keys", conf)
    v1, image = tmp_path / "v1.img", tmp_path / "v2.img"
    v1.write_bytes(build_image(DemoImageSpec(version=1, files=40, size=2 << 20)))
    image.write_bytes(build_image(DemoImageSpec(version=2, files=40, size=2 << 20)))
    key_a = product_key_file(tmp_path / "pk", PRODUCT, "a")
    staged = tmp_path / "delegate.json"
    out = run("otakit", "repo", "delegate", repo, PRODUCT, "--product-keys", key_a,
              "--bins", "2", "--stage", "--out", staged, "--json")  # fmt: skip
    assert json.loads(out.stdout)["documents"][:2] == ["targets v2", f"{PRODUCT} v1"]
    uris = [f"file2:{tmp_path / 't' / k['uri'].split(':', 1)[1]}" for k in holders["keys"]]
    product_uri = f"file2:{tmp_path / 'pk' / f'{PRODUCT}-a0.pem'}"

    def holder_signs(uri: str) -> None:  # on the holder's own machine: a copy travels
        travelled = tmp_path / "at-holder.json"
        travelled.write_bytes(staged.read_bytes())
        run("otakit", "repo", "sign", travelled, "--key", uri)
        staged.write_bytes(travelled.read_bytes())

    holder_signs(uris[0])
    early = run("otakit", "repo", "publish", staged, repo, "--keys", conf, ok=False)
    assert early.returncode == SECURITY_EXIT and "expected 2 signature(s)" in early.stderr
    holder_signs(product_uri)
    st = json.loads(run("otakit", "repo", "sign-status", staged, "--repo", repo, "--json").stdout)
    done = {d["role"]: d["complete"] for d in st["documents"]}
    assert done == {"targets": False, PRODUCT: True, f"{PRODUCT}-bin-0": True,
                    f"{PRODUCT}-bin-1": True}  # fmt: skip
    holder_signs(uris[1])
    out = run("otakit", "repo", "publish", staged, repo, "--keys", conf, "--json")
    assert json.loads(out.stdout)["written"][-1] == "timestamp.json"

    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        device = _device(tmp_path, "d", url, repo, v1, "1.0")
        run("otakit", "release", repo, image, "--keys", conf, "--product", PRODUCT,
            "--hardware", HW, "--version", "2.0", "--deltas", "0",
            "--product-keys", key_a)  # fmt: skip
        _update_and_commit(device, "2.0")
        assert sha(tmp_path / "d" / "slot-b.img") == sha(image)
