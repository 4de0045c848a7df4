"""Issue 12 end to end, with the installed console scripts: verified fetch of any target
(``release-file`` → nginx → ``otakit-device fetch``), also through a delegated product, and
the refusals that must leave nothing behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from repo.nginx import nginx_serving
from tests.e2e.test_end_to_end import HW, PRODUCT, SECURITY_EXIT, run, sha
from tests.helpers_delegation import product_key_file

USAGE_EXIT = 2


def init_device(tmp: Path, url: str, repo: Path, slot_a_bytes: bytes = b"\0" * 65536) -> Path:
    state = tmp / "device"
    slot_a, slot_b = tmp / "slot-a.img", tmp / "slot-b.img"
    slot_a.write_bytes(slot_a_bytes)
    slot_b.write_bytes(bytes(len(slot_a_bytes)))
    run(
        "otakit-device", "--state", state, "init", "--repo-url", url,
        "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", HW,
        "--slot-a", slot_a, "--slot-b", slot_b, "--installed-version", "1.0",
    )  # fmt: skip
    return state


@pytest.fixture(scope="module")
def files_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a top-level file target and one in a delegated product."""
    base = tmp_path_factory.mktemp("files")
    run("otakit", "keys", "generate-demo", base / "keys")
    conf = base / "keys" / "keys.json"
    repo = base / "repo"
    run("otakit", "repo", "init", repo, "--keys", conf)
    (base / "site.tar").write_bytes(b"configuration archive\n" * 500)
    out = run(
        "otakit", "release-file", repo, base / "site.tar", "--keys", conf,
        "--name", "site/config.tar", "--custom", '{"format": "tar", "site": 7}', "--json",
    )  # fmt: skip
    assert json.loads(out.stdout)["role"] == "targets"
    pk = product_key_file(base / "pk", PRODUCT, "a")
    run("otakit", "repo", "delegate", repo, PRODUCT, "--keys", conf, "--product-keys", pk,
        "--bins", "4", "--head", "2")  # fmt: skip
    (base / "modem.bin").write_bytes(bytes(range(256)) * 64)
    out = run(
        "otakit", "release-file", repo, base / "modem.bin", "--keys", conf,
        "--name", f"{PRODUCT}/firmware/modem.bin", "--product-keys", pk, "--json",
    )  # fmt: skip
    assert json.loads(out.stdout)["role"] == PRODUCT
    return base


def test_release_file_then_fetch_over_nginx_top_level_and_delegated(
    files_repo: Path, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(files_repo / "repo", repo)
    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        state = init_device(tmp_path, url, repo)
        out = run(
            "otakit-device", "--state", state, "fetch", "site/config.tar",
            "--out", tmp_path / "got.tar", "--json",
        )  # fmt: skip
        doc = json.loads(out.stdout)
        assert doc["target"] == "site/config.tar"
        assert doc["custom"]["format"] == "tar" and doc["custom"]["site"] == 7
        assert doc["hashes"]["sha256"] == sha(files_repo / "site.tar")
        assert sha(tmp_path / "got.tar") == sha(files_repo / "site.tar")

        run("otakit-device", "--state", state, "fetch", f"{PRODUCT}/firmware/modem.bin",
            "--out", tmp_path / "modem.bin")  # fmt: skip
        assert sha(tmp_path / "modem.bin") == sha(files_repo / "modem.bin")

        # a file target is not an image: update has nothing to install
        upd = run("otakit-device", "--state", state, "update")
        assert upd.returncode == 0

        missing = run("otakit-device", "--state", state, "fetch", "site/nope.tar",
                      "--out", tmp_path / "nope", ok=False)  # fmt: skip
        assert missing.returncode == USAGE_EXIT and "not signed" in missing.stderr


def test_tampered_file_on_the_server_is_refused_nothing_written(
    files_repo: Path, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(files_repo / "repo", repo)
    (stored,) = (repo / "targets" / "site").glob("*.config.tar")
    data = bytearray(stored.read_bytes())
    data[10] ^= 1
    stored.write_bytes(bytes(data))
    outdir = tmp_path / "out"
    outdir.mkdir()
    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        state = init_device(tmp_path, url, repo)
        proc = run("otakit-device", "--state", state, "fetch", "site/config.tar",
                   "--out", outdir / "got.tar", ok=False)  # fmt: skip
    assert proc.returncode == SECURITY_EXIT, proc.stderr
    assert "signed" in proc.stderr
    assert list(outdir.iterdir()) == []  # no FILE, no temp file


def test_fetch_from_a_mirror_directory(files_repo: Path, tmp_path: Path) -> None:
    """The same fetch from a USB stick: init with a plain path, no server at all."""
    usb = tmp_path / "usb"
    shutil.copytree(files_repo / "repo", usb)
    state = init_device(tmp_path, str(usb), usb)
    run("otakit-device", "--state", state, "fetch", "site/config.tar",
        "--out", tmp_path / "got.tar")  # fmt: skip
    assert sha(tmp_path / "got.tar") == sha(files_repo / "site.tar")


def test_release_file_refuses_the_image_key_in_custom(files_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(files_repo / "repo", repo)
    proc = run(
        "otakit", "release-file", repo, files_repo / "site.tar", "--keys",
        files_repo / "keys" / "keys.json", "--name", "site/x.tar",
        "--custom", '{"otakit": {}}', ok=False,
    )  # fmt: skip
    assert proc.returncode == USAGE_EXIT and "reserved for images" in proc.stderr
