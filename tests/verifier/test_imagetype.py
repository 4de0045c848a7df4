"""Image type recognition as tables: real images made by the real tools, synthetic headers,
and the files a release pipeline must never mistake for an OS image."""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from verifier.artifact import CUSTOM_KEY, ArtifactInfo, ImageRef, ImageVersion
from verifier.errors import ArtifactSchemaError, ConfigError
from verifier.imagetype import (
    DETECTABLE,
    HEAD_LENGTH,
    IMAGE_TYPES,
    ImageType,
    describe_unknown,
    detect,
)
from verifier.state import DeviceConfig

Tool = Callable[[str], str]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def _tree(tmp: Path) -> Path:
    d = tmp / "tree"
    (d / "etc").mkdir(parents=True, exist_ok=True)
    (d / "etc" / "os-release").write_text('NAME="otakit test"\n')
    (d / "bin").mkdir(exist_ok=True)
    (d / "bin" / "tool").write_bytes(os.urandom(5000))
    return d


# --- builders: each returns the image file, made by the real tool ---------------------------


def ext(kind: str) -> Callable[[Path, Tool], Path]:
    def build(tmp: Path, tool: Tool) -> Path:
        img = _sparse(tmp / f"{kind}.img", 8 << 20)
        _run(tool(f"mkfs.{kind}"), "-q", "-F", str(img))
        return img

    return build


def squashfs(tmp: Path, tool: Tool) -> Path:
    img = tmp / "root.squashfs"
    _run(tool("mksquashfs"), str(_tree(tmp)), str(img), "-noappend", "-quiet")
    return img


def erofs(tmp: Path, tool: Tool) -> Path:
    img = tmp / "root.erofs"
    _run(tool("mkfs.erofs"), str(img), str(_tree(tmp)))
    return img


def btrfs(tmp: Path, tool: Tool) -> Path:
    img = _sparse(tmp / "btrfs.img", 128 << 20)  # below ~109 MiB mkfs.btrfs refuses
    _run(tool("mkfs.btrfs"), "-q", str(img))
    return img


def vfat(bits: str) -> Callable[[Path, Tool], Path]:
    def build(tmp: Path, tool: Tool) -> Path:
        img = _sparse(tmp / f"fat{bits}.img", {"12": 8, "16": 16, "32": 40}[bits] << 20)
        _run(tool("mkfs.vfat"), "-F", bits, str(img))
        return img

    return build


def gpt_disk(tmp: Path, tool: Tool) -> Path:
    img = _sparse(tmp / "gpt.img", 16 << 20)
    _run(tool("sgdisk"), "-o", "-n", "1:2048:0", "-t", "1:ef00", str(img))
    # an ESP inside: the disk must still be a disk, not its first filesystem
    _run(tool("mkfs.vfat"), "--offset", "2048", str(img), str((16 << 20) // 1024 - 1100))
    return img


def mbr_disk(tmp: Path, tool: Tool) -> Path:
    img = _sparse(tmp / "mbr.img", 16 << 20)
    subprocess.run(
        [tool("sfdisk"), "-q", str(img)],
        input=b"label: dos\nstart=2048, type=c, bootable\n",
        check=True,
        capture_output=True,
        timeout=60,
    )
    _run(tool("mkfs.vfat"), "--offset", "2048", str(img), str((16 << 20) // 1024 - 1100))
    return img


def gnu_tar(tmp: Path, tool: Tool) -> Path:
    img = tmp / "root.tar"
    _run(tool("tar"), "--format=gnu", "-cf", str(img), "-C", str(_tree(tmp)), ".")
    return img


def py_tar(fmt: int) -> Callable[[Path, Tool], Path]:
    def build(tmp: Path, _tool: Tool) -> Path:
        img = tmp / "py.tar"
        with tarfile.open(img, "w", format=fmt) as tar:
            tar.add(_tree(tmp), arcname=".")
        return img

    return build


@dataclass(frozen=True)
class Real:
    name: str
    build: Callable[[Path, Tool], Path]
    expect: ImageType


REAL = [
    Real("mkfs.ext4", ext("ext4"), "ext4"),
    Real("mkfs.ext3", ext("ext3"), "ext4"),
    Real("mkfs.ext2", ext("ext2"), "ext4"),
    Real("mksquashfs", squashfs, "squashfs"),
    Real("mkfs.erofs", erofs, "erofs"),
    Real("mkfs.btrfs", btrfs, "btrfs"),
    Real("mkfs.vfat -F 12", vfat("12"), "vfat"),
    Real("mkfs.vfat -F 16", vfat("16"), "vfat"),
    Real("mkfs.vfat -F 32", vfat("32"), "vfat"),
    Real("sgdisk GPT disk holding a FAT ESP", gpt_disk, "gpt"),
    Real("sfdisk MBR disk holding a FAT partition", mbr_disk, "mbr"),
    Real("GNU tar", gnu_tar, "tar"),
    Real("POSIX ustar (python)", py_tar(tarfile.USTAR_FORMAT), "tar"),
    Real("pax (python)", py_tar(tarfile.PAX_FORMAT), "tar"),
]


def head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD_LENGTH)


@pytest.mark.parametrize("row", REAL, ids=[r.name for r in REAL])
def test_real_images_are_recognised(row: Real, tmp_path: Path, require_tool: Tool) -> None:
    assert detect(head(row.build(tmp_path, require_tool))) == row.expect


def test_the_demo_images_are_tar() -> None:
    from signer.demo_image import DemoImageSpec, build_image  # a test may look at both sides

    for v in (1, 2):
        assert detect(build_image(DemoImageSpec(v, files=20, size=1 << 20))[:HEAD_LENGTH]) == "tar"


# --- synthetic headers: the documented magics, and each without its plausibility fields -----


def at(size: int, *parts: tuple[int, bytes]) -> bytes:
    out = bytearray(size)
    for off, data in parts:
        out[off : off + len(data)] = data
    return bytes(out)


def ext4_sb(log_block: int = 2, inodes: int = 2048) -> bytes:
    sb = bytearray(1024)
    struct.pack_into("<II", sb, 0, inodes, 8192)
    struct.pack_into("<I", sb, 24, log_block)
    sb[56:58] = b"\x53\xef"
    struct.pack_into("<I", sb, 76, 1)
    return bytes(sb)


EROFS = b"\xe2\xe1\xf5\xe0" + bytes(8) + b"\x0c"
SQUASH = b"hsqs" + bytes(8) + struct.pack("<I", 1 << 17) + bytes(6) + struct.pack("<H", 17)
SQUASH += bytes(4) + struct.pack("<HH", 4, 0)
BTRFS = at(HEAD_LENGTH, (65536 + 48, struct.pack("<Q", 65536)), (65536 + 64, b"_BHRfS_M"))
ZEROS = bytes(HEAD_LENGTH)
RANDOM = random.Random(7).randbytes(HEAD_LENGTH)

SYNTHETIC: list[tuple[str, bytes, ImageType | None]] = [
    ("ext4 superblock", at(4096, (1024, ext4_sb())), "ext4"),
    ("ext4 magic with a 2**40 block size", at(4096, (1024, ext4_sb(log_block=30))), None),
    ("ext4 magic with no inodes", at(4096, (1024, ext4_sb(inodes=0))), None),
    ("ext4 magic alone", at(4096, (1080, b"\x53\xef")), None),
    ("ext4 superblock cut short", at(4096, (1024, ext4_sb()))[:1100], None),
    ("erofs superblock", at(4096, (1024, EROFS)), "erofs"),
    ("erofs magic, block size bits 40", at(4096, (1024, EROFS[:12] + b"\x28")), None),
    ("btrfs superblock", BTRFS, "btrfs"),
    ("btrfs magic cut short", BTRFS[: 65536 + 70], None),
    ("btrfs magic, superblock names another offset", at(HEAD_LENGTH, (65600, b"_BHRfS_M")), None),
    ("squashfs 4.0 superblock", at(4096, (0, SQUASH)), "squashfs"),
    ("'hsqs' alone", at(4096, (0, b"hsqs")), None),
    ("boot signature on zeros (no partition, no BPB)", at(4096, (510, b"\x55\xaa")), None),
    ("'EFI PART' without a protective MBR", at(4096, (512, b"EFI PART")), None),
    (
        "'ustar' with a wrong header checksum",
        at(4096, (257, b"ustar\x0000"), (148, b"0000000\0")),
        None,
    ),
    ("zeros", ZEROS, None),
    ("random bytes", RANDOM, None),
    ("empty", b"", None),
    ("one byte", b"\x7f", None),
]


@pytest.mark.parametrize(
    ("data", "expect"), [(d, e) for _, d, e in SYNTHETIC], ids=[n for n, _, _ in SYNTHETIC]
)
def test_synthetic_headers(data: bytes, expect: ImageType | None) -> None:
    assert detect(data) == expect


def test_etc_passwd_is_not_an_image(tmp_path: Path) -> None:
    passwd = Path("/etc/passwd")
    data = passwd.read_bytes() if passwd.is_file() else b"root:x:0:0:root:/root:/bin/sh\n" * 40
    assert detect(data[:HEAD_LENGTH]) is None
    found = describe_unknown(data[:HEAD_LENGTH], len(data))
    assert f"a {len(data)}-byte file with no known filesystem or disk-image signature" in found
    assert "starts with text: 'root:" in found


def test_random_bytes_are_never_recognised() -> None:
    """2,000 seeded random heads: the short magics are backed by plausibility fields."""
    rng = random.Random(20261201)
    hits = [detect(rng.randbytes(HEAD_LENGTH)) for _ in range(2000)]
    assert hits == [None] * 2000


def test_descriptions_of_unknown_files() -> None:
    assert describe_unknown(b"", 0) == "an empty file"
    assert "first 4096 bytes are all zero" in describe_unknown(bytes(4096), 1 << 20)
    assert describe_unknown(RANDOM, 10**9).endswith("no known filesystem or disk-image signature")


def test_the_names_are_a_closed_set() -> None:
    assert (*DETECTABLE, "raw") == IMAGE_TYPES
    assert set(IMAGE_TYPES) == {
        "ext4", "squashfs", "erofs", "btrfs", "vfat", "gpt", "mbr", "tar", "raw",
    }  # fmt: skip


# --- the signed field (artifact schema 1.1) --------------------------------------------------


def custom(schema: str, **extra: object) -> dict[str, object]:
    d: dict[str, object] = {
        "schema": schema,
        "product": "edge-gw",
        "hardware": ["rpi4"],
        "version": "2.0",
        "kind": "full",
        "compression": "zstd",
        "image": {"length": 1000, "sha256": "ab" * 32},
        **extra,
    }
    return {CUSTOM_KEY: d}


def test_schema_1_0_without_image_type_parses_as_unknown() -> None:
    assert ArtifactInfo.from_custom(custom("1.0")).image_type is None


@pytest.mark.parametrize("name", IMAGE_TYPES)
def test_image_type_round_trips(name: ImageType) -> None:
    info = ArtifactInfo.from_custom(custom("1.1", image_type=name))
    assert info.image_type == name
    out = info.to_custom()
    assert out[CUSTOM_KEY]["schema"] == "1.1" and out[CUSTOM_KEY]["image_type"] == name
    assert ArtifactInfo.from_custom(out) == info


@pytest.mark.parametrize("bad", ["ext5", "EXT4", "", 4, "squash", ["ext4"]])
def test_image_type_outside_the_closed_set_is_refused(bad: object) -> None:
    with pytest.raises(ArtifactSchemaError, match="image_type: expected one of ext4, squashfs"):
        ArtifactInfo.from_custom(custom("1.1", image_type=bad))


def test_constructing_with_an_unknown_type_is_refused() -> None:
    with pytest.raises(ArtifactSchemaError, match="image_type"):
        ArtifactInfo(
            "edge-gw",
            ("rpi4",),
            ImageVersion.parse("1"),
            "full",
            "zstd",
            ImageRef(1, "ab" * 32),
            image_type="zfs",  # type: ignore[arg-type]
        )


def test_an_unknown_major_is_still_refused() -> None:
    with pytest.raises(ArtifactSchemaError, match=r"major versions 1, 2, 3, found '4\.0'"):
        ArtifactInfo.from_custom(custom("4.0", image_type="ext4"))


# --- the device configuration ---------------------------------------------------------------


def config(**kw: object) -> DeviceConfig:
    return DeviceConfig(
        "http://repo.test/",
        "edge-gw",
        "rpi4",
        Path("/dev/a"),
        Path("/dev/b"),
        **kw,  # type: ignore[arg-type]
    )


def test_a_config_written_before_image_type_still_loads() -> None:
    old = config().to_dict()
    assert "image_type" not in old  # unconfigured devices write what they always wrote
    assert DeviceConfig.from_dict(old).image_type is None


def test_a_configured_image_type_round_trips() -> None:
    c = config(image_type="squashfs")
    assert DeviceConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("bad", ["ext5", 3, ""])
def test_a_config_with_an_unknown_image_type_is_refused(bad: object) -> None:
    d = config().to_dict() | {"image_type": bad}
    with pytest.raises(ConfigError, match="image_type: expected one of"):
        DeviceConfig.from_dict(d)


def test_device_cli_refuses_an_unknown_image_type(tmp_path: Path) -> None:
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from verifier.cli import main; main()",
         "--state", str(tmp_path / "s"), "init",
         "--repo-url", "http://repo.test/", "--root", str(tmp_path / "root.json"),
         "--product", "edge-gw", "--slot-a", "/dev/a", "--slot-b", "/dev/b",
         "--installed-version", "1.0", "--image-type", "ext5"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--image-type: expected one of ext4, squashfs" in proc.stderr
    assert "Traceback" not in proc.stderr


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_detection_only_needs_the_head() -> None:
    """``detect`` sees ``HEAD_LENGTH`` bytes; a release never reads an image whole for it."""
    data = _tar_bytes() + bytes(1 << 20)
    assert detect(data[:HEAD_LENGTH]) == detect(data) == "tar"
    assert HEAD_LENGTH == 65536 + 4096


# --- the device's update path honours the configured type ------------------------------------


def test_a_typed_device_refuses_a_target_of_another_type_and_writes_nothing(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from tests.verifier.conftest import NOW, evolve, make_image
    from tests.verifier.repo_sim import BASE, RepoSim, compress, full_info
    from verifier.device import Device, init_device
    from verifier.effects import RealDisk
    from verifier.errors import IncompatibleTargetError
    from verifier.update import UpdateOptions, update

    sim = RepoSim(now=NOW)
    v1 = make_image(1)
    slot_a, slot_b, mounts = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "mountinfo"
    slot_a.write_bytes(v1)
    slot_b.write_bytes(b"")
    mounts.write_text("")
    config = DeviceConfig(BASE, "edge-gw", "rpi4", slot_a, slot_b, image_type="ext4")
    state = tmp_path / "state"
    init_device(
        state, RealDisk(), config, root=sim.root_bytes, installed_version=ImageVersion.parse("1.0")
    )
    v2, v3 = evolve(v1, 2), evolve(v1, 3)
    sim.add_artifact(replace(full_info(v2, "2.0"), image_type="tar"), compress(v2))
    sim.publish()

    def run() -> object:
        dev = Device.open(state, RealDisk())
        return update(dev, NOW, options=UpdateOptions(mountinfo=mounts), fetcher=sim)

    with pytest.raises(IncompatibleTargetError, match="signed as a tar image; this device's"):
        run()
    assert slot_b.read_bytes() == b""  # nothing downloaded into, nothing written
    assert sim.target_requests() == []

    sim.add_artifact(replace(full_info(v3, "3.0"), image_type="ext4"), compress(v3))
    sim.publish()
    run()
    assert slot_b.read_bytes() == v3
