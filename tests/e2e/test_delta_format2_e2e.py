"""A format-2 delta with DIFF ops through the whole device path, staged and stream.

The publisher CLI releases two raw images whose middle is a "rebuilt binary" (every 16
bytes a pointer moved), with ``--delta-max`` so the delta carries DIFF ops; nginx serves the
repository; the device CLI installs the delta in both modes and the inactive slot ends up
byte-identical to the new image. The container is checked to really hold DIFF ops (and to be
format version 2), so this proves the device path decodes them, not just older kinds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.delta.helpers_delta import relocated, text_like
from tests.e2e.test_end_to_end import HW, PRODUCT, make_device, run, sha, status
from verifier.delta.format import OpKind, iter_ops, parse_prefix, prefix_length_of

MIB = 1 << 20


def _images(seed: int) -> tuple[bytes, bytes]:
    r = random.Random(seed)
    head = text_like(r, MIB)
    old_bin, new_bin = relocated(r, 2 * MIB)
    tail = bytes(MIB)
    return head + old_bin + tail, head + new_bin + tail


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pub-f2")
    run("otakit", "keys", "generate-demo", base / "keys")
    repo = base / "repo"
    run("otakit", "repo", "init", repo, "--keys", base / "keys" / "keys.json")
    for v, image in enumerate(_images(2026), start=1):
        img = base / f"v{v}.img"
        img.write_bytes(image)
        out = run(
            "otakit", "release", repo, img, "--keys", base / "keys" / "keys.json",
            "--product", PRODUCT, "--version", f"{v}.0", "--hardware", HW,
            "--image-type", "raw", "--delta-max", "--json",
        )  # fmt: skip
        kinds = sorted(a["kind"] for a in json.loads(out.stdout)["artifacts"])
        assert kinds == (["full"] if v == 1 else ["delta", "full"])
    return base


def _delta_file(repo: Path) -> Path:
    return next((repo / "targets" / PRODUCT / "2.0").glob("*.delta-from-1.0.otd"))


def test_the_published_delta_is_format_2_with_diff_ops(published: Path) -> None:
    data = _delta_file(published / "repo").read_bytes()
    blob = data[: prefix_length_of(data)]
    header = parse_prefix(blob)
    kinds = [op.kind for op in iter_ops(blob, header)]
    assert header.version == 2
    assert kinds.count(OpKind.DIFF) >= 1, kinds
    full = next((published / "repo" / "targets" / PRODUCT / "2.0").glob("*.full.img.zst"))
    assert len(data) * 4 < full.stat().st_size


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_device_installs_a_format_2_delta(
    served: tuple[str, Path], published: Path, tmp_path: Path, mode: str
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    slot_a = tmp_path / "slot-a.img"
    before = sha(slot_a)

    out = run("otakit-device", "--state", state, "update", "--mode", mode, "--json")
    done = [json.loads(line) for line in out.stdout.splitlines() if '"done"' in line][-1]
    assert (done["version"], done["slot"], done["kind"]) == ("2.0", "b", "delta")
    assert sha(slot_a) == before, "the running slot was written"
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
    st = status(state)
    assert (st["booted"], st["trial"]) == ("a", "b")
    report = json.loads(run("otakit-device", "--state", state, "report", "--json").stdout)
    last = report["last_cycle"]
    assert (last["outcome"], last["detail"]) == ("installed", "delta")
    assert last["bytes_downloaded"] < 2 * _delta_file(repo).stat().st_size
