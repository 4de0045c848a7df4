"""Issue 12, sneakernet: ``otakit export`` → a stick → ``otakit-device update --from``, with the
installed console scripts, then the device going online (no rollback), and every bad stick
of the issue's list refused with the running slot, boot state and trusted metadata intact.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from repo.nginx import nginx_serving
from tests.e2e.test_end_to_end import HW, PRODUCT, SECURITY_EXIT, published, run, sha, status

__all__ = ["published"]  # the module-scoped fixture: repository with 1.0 and 2.0 (+delta)

TRANSPORT_EXIT = 4
OFFLINE_URL = "http://127.0.0.1:9/"  # nothing listens: the site has no network


def keys(base: Path) -> Path:
    return base / "keys" / "keys.json"


def make_export(published: Path, tmp: Path, out: str, *extra: str) -> tuple[Path, Path]:
    """A private repository copy and an export of 2.0 with the delta from 1.0."""
    repo = tmp / "repo"
    if not repo.exists():
        shutil.copytree(published / "repo", repo)
    dest = tmp / out
    proc = run(
        "otakit", "export", repo, dest, "--keys", keys(published), "--product", PRODUCT,
        "--version", "2.0", "--from-version", "1.0", "--json", *extra,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert doc["product"] == PRODUCT and doc["version"] == "2.0"
    return repo, dest


def device(tmp: Path, published: Path, repo: Path, url: str = OFFLINE_URL, hw: str = HW) -> Path:
    state = tmp / "device"
    slot_a, slot_b = tmp / "slot-a.img", tmp / "slot-b.img"
    shutil.copyfile(published / "v1.img", slot_a)
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    run(
        "otakit-device", "--state", state, "init", "--repo-url", url,
        "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", hw,
        "--slot-a", slot_a, "--slot-b", slot_b, "--installed-version", "1.0",
    )  # fmt: skip
    return state


def trusted(state: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(state)): p.read_bytes()
        for p in sorted((state / "metadata").rglob("*"))
        if p.is_file()
    }


def kept(state: Path, tmp: Path) -> dict[str, object]:
    st = status(state)
    return {
        "slot_a": sha(tmp / "slot-a.img"),
        "boot": {k: st[k] for k in ("booted", "primary", "trial", "tries_left")},
        "metadata": trusted(state),
    }


@pytest.mark.parametrize("out", ["stick", "stick.tar"])
def test_install_from_export_then_go_online_without_rollback(
    published: Path, tmp_path: Path, require_tool: Callable[[str], str], out: str
) -> None:
    before_export = tmp_path / "repo-before"
    shutil.copytree(published / "repo", before_export)
    repo, stick = make_export(published, tmp_path, out, "--valid-for", "30d")
    insp = json.loads(run("otakit", "inspect", "export", stick, "--json").stdout)
    assert insp["product"] == PRODUCT and insp["valid_for_days"] == 30
    assert insp["verified"] is True

    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        state = device(tmp_path, published, repo, url)  # its repository, unreachable on site
        before = sha(tmp_path / "slot-a.img")
        proc = run("otakit-device", "--state", state, "update", "--from", stick, "--json")
        done = json.loads([ln for ln in proc.stdout.splitlines() if '"done"' in ln][-1])
        assert (done["version"], done["kind"]) == ("2.0", "delta")
        assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
        assert sha(tmp_path / "slot-a.img") == before
        run("otakit-device", "--state", state, "boot")
        run("otakit-device", "--state", state, "mark-good")

        # online later: the repository published a newer timestamp with the export, so the
        # device refreshes (nothing to do: it runs 2.0) instead of seeing a rollback
        ok = run("otakit-device", "--state", state, "update")
        assert ok.returncode == 0 and "nothing to do" in ok.stderr.lower(), ok.stderr

    # the repository as it was before the export is older than what the device now trusts
    with nginx_serving(require_tool("nginx"), before_export, tmp_path / "nginx2") as url:
        stale = run("otakit-device", "--state", state, "update", "--from", url, ok=False)
        assert stale.returncode == SECURITY_EXIT, stale.stderr


def test_export_for_other_hardware_or_product_is_refused(published: Path, tmp_path: Path) -> None:
    repo, stick = make_export(published, tmp_path, "stick")
    state = device(tmp_path, published, repo, hw="board-other")
    before = kept(state, tmp_path)
    proc = run("otakit-device", "--state", state, "update", "--from", stick, ok=False)
    assert proc.returncode == SECURITY_EXIT and "hardware" in proc.stderr, proc.stderr
    assert kept(state, tmp_path) == before

    manifest = stick / "otakit-export.json"
    doc = json.loads(manifest.read_text())
    doc["product"] = "other-product"
    manifest.write_text(json.dumps(doc))
    (tmp_path / "d2").mkdir()
    state2 = device(tmp_path / "d2", published, repo)
    proc = run("otakit-device", "--state", state2, "update", "--from", stick, ok=False)
    assert proc.returncode == SECURITY_EXIT and "other-product" in proc.stderr


def test_tampered_image_on_the_stick_is_refused(published: Path, tmp_path: Path) -> None:
    repo, stick = make_export(published, tmp_path, "stick")
    for art in (stick / "targets" / PRODUCT / "2.0").iterdir():
        data = bytearray(art.read_bytes())
        data[200] ^= 1
        art.write_bytes(bytes(data))
    state = device(tmp_path, published, repo)
    run("otakit-device", "--state", state, "update", "--from", stick, ok=False)  # refresh kept
    before = kept(state, tmp_path)
    proc = run("otakit-device", "--state", state, "update", "--from", stick, ok=False)
    assert proc.returncode == SECURITY_EXIT and "signed" in proc.stderr, proc.stderr
    assert kept(state, tmp_path) == before


def test_older_export_than_trusted_is_refused(published: Path, tmp_path: Path) -> None:
    repo, old = make_export(published, tmp_path, "old")
    _, new = make_export(published, tmp_path, "new")
    state = device(tmp_path, published, repo)
    run("otakit-device", "--state", state, "update", "--from", new)
    before = kept(state, tmp_path)
    proc = run("otakit-device", "--state", state, "update", "--from", old, ok=False)
    assert proc.returncode == SECURITY_EXIT, proc.stderr
    assert kept(state, tmp_path) == before


def _rewrite(good: Path, bad: Path, extra: Callable[[tarfile.TarFile], None]) -> None:
    with tarfile.open(good) as src, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            dst.addfile(m, f)
        extra(dst)


def _file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        t.addfile(info)

    return add


BAD_TARS = {
    "dotdot": (_file("metadata/../../evil"), SECURITY_EXIT, "plain names"),
    "absolute": (_file("/etc/evil"), SECURITY_EXIT, "absolute"),
    "symlink": (_special("targets/link", tarfile.SYMTYPE, "/etc/passwd"), SECURITY_EXIT, "link"),
    "hardlink": (
        _special("targets/hard", tarfile.LNKTYPE, "metadata/1.root.json"),
        SECURITY_EXIT,
        "hard link",
    ),
    "device": (_special("targets/dev", tarfile.CHRTYPE), SECURITY_EXIT, "device"),
    "fifo": (_special("targets/fifo", tarfile.FIFOTYPE), SECURITY_EXIT, "FIFO"),
    "duplicate": (_file("metadata/timestamp.json", b"{}"), SECURITY_EXIT, "twice"),
}


@pytest.mark.parametrize("case", [*BAD_TARS, "truncated"])
def test_bad_tar_is_refused_nothing_changed(published: Path, tmp_path: Path, case: str) -> None:
    repo, good = make_export(published, tmp_path, "stick.tar")
    bad = tmp_path / "bad.tar"
    if case == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        code, words = TRANSPORT_EXIT, "truncated"
    else:
        extra, code, words = BAD_TARS[case]
        _rewrite(good, bad, extra)
    state = device(tmp_path, published, repo)
    before = kept(state, tmp_path)
    proc = run("otakit-device", "--state", state, "update", "--from", bad, ok=False)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert kept(state, tmp_path) == before
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


def test_valid_for_is_bounded(published: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(published / "repo", repo)
    proc = run(
        "otakit", "export", repo, tmp_path / "x", "--keys", keys(published),
        "--product", PRODUCT, "--valid-for", "91d", ok=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "90 days" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_install_from_a_loop_mounted_filesystem_image(
    published: Path, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    """The stick for real: the export on an ext4 image, mounted read-only through a loop
    device (skipped where the machine does not allow mounting)."""
    import os
    import subprocess

    repo, stick = make_export(published, tmp_path, "stick")
    size = sum(p.stat().st_size for p in stick.rglob("*") if p.is_file())
    img = tmp_path / "usb.img"
    with img.open("wb") as f:
        f.truncate(size * 2 + (8 << 20))
    subprocess.run([require_tool("mkfs.ext4"), "-q", "-d", stick, img], check=True)
    mnt = tmp_path / "media" / "usb"
    mnt.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    mounted = subprocess.run(
        ["mount", "-o", "loop,ro", img, mnt], capture_output=True, text=True, timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {mounted.stderr.strip()}")
    try:
        state = device(tmp_path, published, repo)
        proc = run("otakit-device", "--state", state, "update", "--from", mnt, "--json")
        done = json.loads([ln for ln in proc.stdout.splitlines() if '"done"' in ln][-1])
        assert (done["version"], done["kind"]) == ("2.0", "delta")
        assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
    finally:
        subprocess.run(["umount", mnt], check=False, timeout=30)


def test_export_of_a_delegated_product_carries_its_roles(published: Path, tmp_path: Path) -> None:
    """A product delegated to its own key (with hash bins): the export holds the product role
    and its bins, and the device installs from it through the delegation."""
    from signer.demo_image import DemoImageSpec, build_image
    from tests.helpers_delegation import product_key_file

    repo = tmp_path / "repo"
    shutil.copytree(published / "repo", repo)
    pk = product_key_file(tmp_path / "pk", PRODUCT, "a")
    run("otakit", "repo", "delegate", repo, PRODUCT, "--keys", keys(published),
        "--product-keys", pk, "--bins", "4", "--head", "1")  # fmt: skip
    v3 = tmp_path / "v3.img"
    v3.write_bytes(build_image(DemoImageSpec(version=3, files=80, size=4 << 20)))
    run("otakit", "release", repo, v3, "--keys", keys(published), "--product-keys", pk,
        "--product", PRODUCT, "--version", "3.0", "--hardware", HW, "--deltas", "1")  # fmt: skip
    stick = tmp_path / "stick.tar"
    run("otakit", "export", repo, stick, "--keys", keys(published), "--product", PRODUCT,
        "--version", "3.0")  # fmt: skip
    with tarfile.open(stick) as t:
        names = t.getnames()
    assert any(n.endswith(f".{PRODUCT}.json") for n in names), names
    state = device(tmp_path, published, repo)
    proc = run("otakit-device", "--state", state, "update", "--from", stick, "--json")
    done = json.loads([ln for ln in proc.stdout.splitlines() if '"done"' in ln][-1])
    assert (done["version"], done["kind"]) == ("3.0", "full")
    assert sha(tmp_path / "slot-b.img") == sha(v3)
