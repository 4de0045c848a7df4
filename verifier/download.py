"""Download a verified target: bounded by its signed length, resumable, verified whole.

Staged mode writes ``STATE/staging/<sha256>.part`` through the ``Disk``; a killed download
keeps its partial file and the next run continues with an HTTP Range request (when the fetcher
and server allow it cleanly; otherwise it restarts). Whatever the path, the complete file is
checked against the signed length and hashes before anything reads it (P1), and renamed to
``<sha256>`` only then. File names come from the signed hash, never from the target path (P3).

Stream mode (``VerifyingReader``) hands the bytes to the decoder as they arrive, bounded by the
signed length and hashed on the way; the caller must call ``finish()`` and only then trust what
was decoded (the slot stays marked bad until then).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from tuf.api import exceptions as tuf_exc

from verifier.effects import Disk, WriteHandle, existing_size
from verifier.errors import OtakitError, TargetVerificationError
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import OtaFetcher

log = logging.getLogger("otakit.download")

Progress = Callable[[int], None]
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
#: fsync a partial download this often so a resumed run does not lose everything
SYNC_EVERY = 8 << 20


class SignedFile(Protocol):
    """What a download is checked against: a target's path and its signed length and
    hashes (a plan ``Candidate``, or any target ``otakit-device fetch`` resolves)."""

    @property
    def path(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def hashes(self) -> tuple[tuple[str, str], ...]: ...


def staging_name(c: SignedFile) -> str:
    digest = dict(c.hashes).get("sha256")
    if digest is None or not _HEX64.match(digest):
        raise TargetVerificationError(
            f"target {c.path}: expected a sha256 hash in its signed metadata, found "
            f"{sorted(dict(c.hashes))}"
        )
    return digest


def verify_file(path: Path, c: SignedFile) -> None:
    """Check a whole file against the target's signed length and every signed hash."""
    size = path.stat().st_size
    if size != c.length:
        raise TargetVerificationError(
            f"target {c.path}: expected {c.length} bytes as signed, found {size}"
        )
    hashers = {algo: _hasher(algo, c) for algo, _ in c.hashes}
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            for h in hashers.values():
                h.update(block)
    for algo, expected in c.hashes:
        found = hashers[algo].hexdigest()
        if found != expected:
            raise TargetVerificationError(
                f"target {c.path}: expected {algo} {expected} as signed, found {found}",
                hint="the server or a mirror serves altered bytes; nothing was installed",
            )


def download_staged(
    fetcher: OtaFetcher,
    url: str,
    c: SignedFile,
    staging: Path,
    disk: Disk,
    *,
    progress: Progress | None = None,
) -> Path:
    """Return the path of a complete, verified copy of target ``c`` in ``staging``."""
    name = staging_name(c)
    done = staging / name
    part = staging / f"{name}.part"
    if existing_size(done) is not None:  # a planted link is refused, not read through
        try:
            verify_file(done, c)
            log.info("download: %s already staged and verified", c.path)
            return done
        except TargetVerificationError:
            disk.unlink(done)
    size = existing_size(part)  # refuses a planted symlink or hard link
    have = size or 0
    if size is not None and not 0 < size < c.length:  # nothing to resume (empty, or too long)
        disk.unlink(part)
        have = 0
    try:
        _fetch_into(fetcher, url, c, part, have, disk, progress)
        verify_file(part, c)
    except TargetVerificationError:
        disk.unlink(part)
        if have == 0:
            raise
        log.warning("download: resumed file of %s did not verify; restarting", c.path)
        _fetch_into(fetcher, url, c, part, 0, disk, progress)
        try:
            verify_file(part, c)
        except TargetVerificationError:
            disk.unlink(part)
            raise
    disk.rename(part, done)
    disk.fsync_dir(staging)
    return done


def _fetch_into(
    fetcher: OtaFetcher,
    url: str,
    c: SignedFile,
    part: Path,
    have: int,
    disk: Disk,
    progress: Progress | None,
) -> None:
    try:
        start, chunks = fetcher.fetch_from(url, have)
    except (tuf_exc.DownloadError, OSError) as e:
        raise map_tuf_error(e, f"download of {c.path}") from e
    if start not in (0, have):
        raise TargetVerificationError(f"server resumed {url} at {start}, asked {have}")
    if start:
        log.info("download: resuming %s at byte %d of %d", c.path, start, c.length)
    if start == 0 and have:
        disk.unlink(part)  # the server restarted from 0: begin a new file
    h = disk.open_write(part, new=start == 0)  # new: O_EXCL; resume: checked, O_NOFOLLOW
    offset = start
    unsynced = 0
    try:
        for chunk in chunks:
            if offset + len(chunk) > c.length:
                raise TargetVerificationError(
                    f"target {c.path}: server sent more than the signed {c.length} bytes"
                )
            h.pwrite(chunk, offset)
            offset += len(chunk)
            unsynced += len(chunk)
            if unsynced >= SYNC_EVERY:
                h.fsync()
                unsynced = 0
            if progress is not None:
                progress(offset)
        h.fsync()
    except (tuf_exc.DownloadError, OSError) as e:
        _keep_partial(h)
        raise map_tuf_error(e, f"download of {c.path} (kept {offset} bytes to resume)") from e
    except OtakitError:
        raise
    finally:
        h.close()


def _keep_partial(h: WriteHandle) -> None:
    with contextlib.suppress(OtakitError):
        h.fsync()


class VerifyingReader:
    """A read-only stream over a download, bounded by and checked against the signed target."""

    def __init__(self, chunks: Iterator[bytes], c: SignedFile, progress: Progress | None) -> None:
        self._chunks = chunks
        self._c = c
        self._buf = b""
        self._seen = 0
        self._hashers = {algo: _hasher(algo, c) for algo, _ in c.hashes}
        self._progress = progress

    def _pull(self) -> bool:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return False
        except (tuf_exc.DownloadError, OSError) as e:
            raise map_tuf_error(e, f"download of {self._c.path}") from e
        self._seen += len(chunk)
        if self._seen > self._c.length:
            raise TargetVerificationError(
                f"target {self._c.path}: server sent more than the signed {self._c.length} bytes"
            )
        for h in self._hashers.values():
            h.update(chunk)
        self._buf += chunk
        if self._progress is not None:
            self._progress(self._seen)
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            while self._pull():
                pass
            out, self._buf = self._buf, b""
            return out
        while len(self._buf) < n and self._pull():
            pass
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Drain the rest and check length and hashes; raise unless the bytes were signed."""
        while self._pull():
            self._buf = b""
        if self._seen != self._c.length:
            raise TargetVerificationError(
                f"target {self._c.path}: expected {self._c.length} bytes as signed, "
                f"found {self._seen}"
            )
        for algo, expected in self._c.hashes:
            found = self._hashers[algo].hexdigest()
            if found != expected:
                raise TargetVerificationError(
                    f"target {self._c.path}: expected {algo} {expected} as signed, found {found}"
                )


def _hasher(algo: str, c: SignedFile) -> hashlib._Hash:
    if algo not in ("sha256", "sha384", "sha512", "blake2b", "sha3_256"):
        raise TargetVerificationError(
            f"target {c.path}: unsupported hash algorithm {algo!r} in signed metadata"
        )
    return hashlib.new(algo)
