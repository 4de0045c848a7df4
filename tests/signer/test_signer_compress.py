"""Full-artifact compression: one pass, streamed, content size in the frame, self-checked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from repo.errors import ImageReadError, SelfCheckError, UsageError
from signer import compress
from signer.compress import CompressSettings, compress_image, self_check_full


def _image(path: Path, size: int) -> bytes:
    rnd = os.urandom(64 * 1024)
    data = (rnd * (size // len(rnd) + 1))[:size]  # compressible, with long repeats
    path.write_bytes(data)
    return data


def test_compress_reports_both_hashes_and_round_trips(tmp_path: Path) -> None:
    data = _image(tmp_path / "img", 3 * (1 << 20) + 123)
    res = compress_image(tmp_path / "img", tmp_path / "a.zst")
    art = (tmp_path / "a.zst").read_bytes()
    assert res.image.length == len(data)
    assert res.image.sha256 == hashlib.sha256(data).hexdigest()
    assert res.artifact.length == len(art)
    assert res.artifact.sha256 == hashlib.sha256(art).hexdigest()
    assert zstandard.get_frame_parameters(art).content_size == len(data)
    assert zstandard.ZstdDecompressor().decompress(art) == data
    assert len(art) < len(data) // 10
    self_check_full(tmp_path / "a.zst", res)


def test_the_image_is_read_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _image(tmp_path / "img", 5 * (1 << 20))
    sizes: list[int] = []
    real_open = Path.open

    def spying_open(self: Path, mode: str = "r", *args: object, **kw: object) -> object:
        f = real_open(self, mode, *args, **kw)  # type: ignore[call-overload]
        if self.name == "img":
            read = f.read

            class Spy:
                def __getattr__(self, name: str) -> object:
                    return getattr(f, name)

                def read(self, n: int = -1) -> bytes:
                    sizes.append(n)
                    return read(n)

                def __enter__(self) -> Spy:
                    return self

                def __exit__(self, *exc: object) -> None:
                    f.close()

            return Spy()
        return f

    monkeypatch.setattr(Path, "open", spying_open)
    compress_image(tmp_path / "img", tmp_path / "a.zst")
    assert sizes and all(0 < n <= compress.CHUNK + 1 for n in sizes)


def test_progress_reports_bytes_read(tmp_path: Path) -> None:
    _image(tmp_path / "img", 2 * (1 << 20) + 5)
    seen: list[int] = []
    compress_image(tmp_path / "img", tmp_path / "a.zst", progress=seen.append)
    assert seen[-1] == 2 * (1 << 20) + 5 and seen == sorted(seen)


def test_a_corrupted_artifact_fails_the_device_decoder_self_check(tmp_path: Path) -> None:
    _image(tmp_path / "img", 1 << 20)
    res = compress_image(tmp_path / "img", tmp_path / "a.zst")
    art = bytearray((tmp_path / "a.zst").read_bytes())
    art[len(art) // 2] ^= 0xFF
    (tmp_path / "a.zst").write_bytes(bytes(art))
    with pytest.raises(SelfCheckError, match=r"expected .* bytes with sha256"):
        self_check_full(tmp_path / "a.zst", res)


def test_self_check_compares_the_decoded_image_with_the_signed_hash(tmp_path: Path) -> None:
    _image(tmp_path / "img", 1 << 20)
    res = compress_image(tmp_path / "img", tmp_path / "a.zst")
    wrong = type(res)(type(res.image)(res.image.length, "0" * 64), res.artifact)
    with pytest.raises(SelfCheckError, match="device decoder"):
        self_check_full(tmp_path / "a.zst", wrong)


def test_errors_for_missing_empty_and_existing_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="cannot open image"):
        compress_image(tmp_path / "nope", tmp_path / "a.zst")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ImageReadError, match="found 0"):
        compress_image(tmp_path / "empty", tmp_path / "a.zst")
    _image(tmp_path / "img", 10)
    (tmp_path / "exists.zst").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="cannot create artifact"):
        compress_image(tmp_path / "img", tmp_path / "exists.zst")


def test_settings_are_bounded_by_what_the_device_accepts() -> None:
    with pytest.raises(UsageError, match="device's limit"):
        CompressSettings(window_log=28)
    with pytest.raises(UsageError, match="level"):
        CompressSettings(level=0)
