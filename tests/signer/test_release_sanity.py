"""Release sanity: the wrong file is refused before anything is signed, a suspicious size is
reported, and a dry run shows exactly what a release would publish while changing nothing.

Regression (issue 7): ``otakit release REPO /etc/passwd --product edge-gw --version 3.0`` used
to exit 0, and a device then wrote those bytes to its inactive slot and armed a trial.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from repo.errors import ImageReadError, LocalError, UsageError
from repo.keys import KeyConfig, parse_key_config
from repo.state import load_state
from signer.compress import compress_image
from signer.delta.release import delta_builder
from signer.demo_image import DemoImageSpec, build_image
from signer.release import (
    SIZE_CHANGE_FACTOR,
    ReleaseResult,
    check_signed_head,
    list_published,
    release,
)
from tests.helpers_repo import NOW
from tests.helpers_repo import publisher_cli as cli
from verifier.imagetype import HEAD_LENGTH

PASSWD = Path("/etc/passwd")


def passwd(tmp_path: Path) -> Path:
    """The real /etc/passwd where there is one (the reported case), else one like it."""
    if PASSWD.is_file():
        return PASSWD
    p = tmp_path / "passwd"
    p.write_text("root:x:0:0:root:/root:/bin/bash\n" * 38)
    return p


def tar_image(tmp_path: Path, name: str, size: int, seed: int = 1) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("payload")
        member.size = min(size // 4, 1 << 20)
        tar.addfile(member, io.BytesIO(_rand(seed, member.size)))
    data = buf.getvalue()
    p = tmp_path / name
    p.write_bytes(data + bytes(size - len(data)))
    return p


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def demo(tmp_path: Path, version: int) -> Path:
    p = tmp_path / f"demo-v{version}.img"
    p.write_bytes(build_image(DemoImageSpec(version, files=40, size=2 << 20)))
    return p


def tree_digest(root: Path) -> str:
    """Every name, kind, mode and byte under ``root`` (not times): equal = byte for byte."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)}\0{st.st_mode:o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def without_keys(keys: KeyConfig) -> KeyConfig:
    """The same key configuration with every private key file gone."""
    doc = keys.source.read_text().replace('"file2:', '"file2:gone-')
    return parse_key_config(json.loads(doc), keys.source)


def release_args(repo: Path, image: Path, keys: KeyConfig, version: str, *extra: str) -> list[str]:
    return [
        "release", str(repo), str(image), "--keys", str(keys.source),
        "--product", "edge-gw", "--version", version, *extra,
    ]  # fmt: skip


# --- the wrong file ----------------------------------------------------------------------------


def test_etc_passwd_is_refused_and_nothing_is_published(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = tree_digest(repo)
    image = passwd(tmp_path)
    with pytest.raises(UsageError) as exc:
        release(repo, keys, "edge-gw", "3.0", image, [], NOW)
    msg = exc.value.message
    assert "expected an OS image (ext4, squashfs, erofs, btrfs, vfat, gpt, mbr, tar)" in msg
    size = image.stat().st_size
    assert f"found a {size}-byte file with no known filesystem or disk-image signature" in msg
    assert "--image-type raw" in (exc.value.hint or "")
    assert tree_digest(repo) == before


def test_etc_passwd_is_refused_by_the_cli_with_exit_2_and_no_traceback(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(repo)
    code, out, err = cli(capsys, *release_args(repo, passwd(tmp_path), keys, "3.0"))
    assert code == 2 and out == ""
    assert "usage error" in err and "no known filesystem or disk-image signature" in err
    assert "Traceback" not in err
    assert tree_digest(repo) == before


def test_etc_passwd_is_refused_by_the_installed_command(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """The exact reported command line, as a user runs it (a fresh process)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from signer.cli import main; main()",
            *release_args(repo, passwd(tmp_path), keys, "3.0"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2, proc.stderr
    assert "no known filesystem or disk-image signature" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "found an empty file"),
        (_rand(3, 300_000), "found a 300000-byte file with no known filesystem"),
        (bytes(1 << 20), "its first 69632 bytes are all zero"),
    ],
    ids=["empty", "random", "zeros"],
)
def test_unrecognised_files_are_refused(
    repo: Path, keys: KeyConfig, tmp_path: Path, content: bytes, found: str
) -> None:
    image = tmp_path / "img"
    image.write_bytes(content)
    with pytest.raises(UsageError, match=found):
        release(repo, keys, "edge-gw", "1.0", image, [], NOW)
    assert load_state(repo).timestamp.signed.version == 1


def test_the_type_check_comes_before_keys(repo: Path, keys: KeyConfig, tmp_path: Path) -> None:
    """A wrong file fails in a second, without asking for a PIN or loading a key."""
    broken = without_keys(keys)
    with pytest.raises(UsageError, match="no known filesystem"):
        release(repo, broken, "edge-gw", "1.0", passwd(tmp_path), [], NOW)
    with pytest.raises(LocalError, match="no such file"):
        release(repo, broken, "edge-gw", "1.0", tar_image(tmp_path, "t", 1 << 16), [], NOW)


def test_explicit_raw_releases_an_unrecognised_image_with_a_warning(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    image = tmp_path / "blob"
    image.write_bytes(_rand(4, 100_000))
    res = release(repo, keys, "edge-gw", "1.0", image, [], NOW, image_type="raw")
    assert res.image_type == "raw" and res.artifacts[0].info.image_type == "raw"
    assert any("released as raw" in w for w in res.warnings)


@pytest.mark.parametrize(
    ("requested", "says"),
    [
        ("ext4", r"expected image type ext4 \(as given\), found image type tar"),
        ("raw", "image type raw means no known signature, but the image carries the tar"),
        ("zfs", "image type: expected one of ext4, squashfs, erofs, btrfs, vfat, gpt, mbr, tar"),
    ],
)
def test_a_type_contradicting_the_bytes_is_refused(
    repo: Path, keys: KeyConfig, tmp_path: Path, requested: str, says: str
) -> None:
    with pytest.raises(UsageError, match=says):
        release(
            repo, keys, "edge-gw", "1.0", tar_image(tmp_path, "t", 1 << 16), [], NOW,
            image_type=requested,
        )  # fmt: skip
    assert load_state(repo).timestamp.signed.version == 1


def test_a_claimed_type_without_its_signature_is_refused(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=r"expected image type squashfs .* found a .*-byte file"):
        release(repo, keys, "edge-gw", "1.0", passwd(tmp_path), [], NOW, image_type="squashfs")


def test_a_real_ext4_image_is_released_as_ext4(
    repo: Path, keys: KeyConfig, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    mkfs = require_tool("mkfs.ext4")
    image = tmp_path / "root.ext4"
    with image.open("wb") as f:
        f.truncate(4 << 20)
    subprocess.run([mkfs, "-q", "-F", str(image)], check=True, capture_output=True)
    res = release(repo, keys, "edge-gw", "1.0", image, [], NOW, image_type="ext4")
    assert res.artifacts[0].info.image_type == "ext4"
    (pub,) = list_published(repo, "edge-gw")
    assert pub.info.image_type == "ext4"  # as signed, parsed back by the device's parser


def test_the_signed_head_must_be_the_detected_head(tmp_path: Path) -> None:
    """An image rewritten between type detection and compression is refused."""
    a = tar_image(tmp_path, "a", 1 << 17, seed=1)
    head = a.read_bytes()[:HEAD_LENGTH]
    art = tmp_path / "a.zst"
    compress_image(a, art)
    check_signed_head(art, head, a)  # the same bytes: fine
    other = tmp_path / "b.img"
    other.write_bytes(bytes(1 << 17))
    with pytest.raises(ImageReadError, match="changed between type detection and compression"):
        check_signed_head(art, other.read_bytes()[:HEAD_LENGTH], a)


# --- the size check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "warned"),
    [
        (1 << 20, None),  # same size
        (2 << 20, None),  # doubled: a resized filesystem, no warning
        (SIZE_CHANGE_FACTOR << 20, None),  # exactly the factor: still quiet
        ((SIZE_CHANGE_FACTOR << 20) + 4096, "larger than the previous release 1.0"),
        (128 << 10, "8.0x smaller than the previous release 1.0"),
    ],
    ids=["same", "x2", "x4", "over x4", "one eighth"],
)
def test_a_size_far_from_the_previous_release_is_warned(
    repo: Path, keys: KeyConfig, tmp_path: Path, second: int, warned: str | None
) -> None:
    release(repo, keys, "edge-gw", "1.0", tar_image(tmp_path, "v1", 1 << 20), [], NOW)
    res = release(repo, keys, "edge-gw", "2.0", tar_image(tmp_path, "v2", second, 2), [], NOW)
    if warned is None:
        assert res.warnings == ()
    else:
        (w,) = res.warnings
        assert warned in w and f"the image is {second} bytes" in w


def test_the_size_warning_reaches_the_cli_on_stderr(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = tar_image(tmp_path, "v1", 1 << 20), tar_image(tmp_path, "v2", 64 << 10, 2)
    assert cli(capsys, *release_args(repo, v1, keys, "1.0"))[0] == 0
    code, out, err = cli(capsys, *release_args(repo, v2, keys, "2.0", "--deltas", "0"))
    assert code == 0
    assert "WARNING: edge-gw 2.0: the image is 65536 bytes, 16.0x smaller" in err
    assert "warning" not in out


# --- dry run -----------------------------------------------------------------------------------


def listing(res: ReleaseResult) -> list[tuple[object, ...]]:
    return [
        (a.target_path, a.stored_path, a.length, a.sha256, a.info.to_custom())
        for a in res.artifacts
    ]


def test_a_dry_run_predicts_the_release_exactly_and_changes_nothing(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """Paths, lengths, hashes, custom and metadata versions, deltas included; repo untouched."""
    build = delta_builder(2)
    release(repo, keys, "edge-gw", "1.0", demo(tmp_path, 1), [], NOW, extra_builder=build)
    v2 = demo(tmp_path, 2)
    before = tree_digest(repo)
    # no keys are needed: a dry run never signs
    dry = release(
        repo, without_keys(keys), "edge-gw", "2.0", v2, [], NOW, extra_builder=build, dry_run=True
    )
    assert tree_digest(repo) == before
    assert dry.dry_run and dry.image_type == "tar"
    assert sorted(a.info.kind for a in dry.artifacts) == ["delta", "full"]
    assert all(not a.stored_path.exists() for a in dry.artifacts)

    real = release(repo, keys, "edge-gw", "2.0", v2, [], NOW, extra_builder=build)
    assert not real.dry_run
    assert listing(dry) == listing(real)
    assert (dry.targets_version, dry.snapshot_version, dry.timestamp_version) == (
        real.targets_version,
        real.snapshot_version,
        real.timestamp_version,
    )
    assert {a.info.image_type for a in real.artifacts} == {"tar"}  # the delta carries it too


def test_a_dry_run_refuses_what_a_release_refuses(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = tree_digest(repo)
    with pytest.raises(UsageError, match="no known filesystem"):
        release(repo, keys, "edge-gw", "3.0", passwd(tmp_path), [], NOW, dry_run=True)
    release(repo, keys, "edge-gw", "3.0", tar_image(tmp_path, "t", 1 << 16), [], NOW)
    after_real = tree_digest(repo)
    assert after_real != before
    with pytest.raises(UsageError, match="already published"):
        release(repo, keys, "edge-gw", "3.0", tar_image(tmp_path, "u", 1 << 16, 5), [], NOW,
                dry_run=True)  # fmt: skip
    assert tree_digest(repo) == after_real


def test_the_cli_dry_run_says_would_publish_and_writes_nothing(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(repo)
    image = tar_image(tmp_path, "v1", 1 << 18)
    code, out, err = cli(capsys, *release_args(repo, image, keys, "1.0", "--dry-run"))
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith("would publish edge-gw/1.0/full.img.zst\t") and line.endswith("\ttar")
    assert "dry run: would publish edge-gw 1.0 (tar image; targets v2" in err
    assert "nothing was signed or written" in err
    assert tree_digest(repo) == before

    code, out, _ = cli(capsys, *release_args(repo, image, keys, "1.0", "--dry-run", "--json"))
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["image_type"] == "tar"
    (art,) = doc["artifacts"]
    assert art["custom"]["otakit"]["image_type"] == "tar"
    assert tree_digest(repo) == before


def test_the_cli_takes_an_explicit_image_type(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(_rand(9, 50_000))
    code, _, err = cli(capsys, *release_args(repo, blob, keys, "1.0", "--image-type", "raw"))
    assert code == 0, err
    assert "WARNING:" in err and "released as raw" in err
    code, _, err = cli(capsys, *release_args(repo, blob, keys, "2.0", "--image-type", "ext4"))
    assert code == 2 and "expected image type ext4" in err and "Traceback" not in err
