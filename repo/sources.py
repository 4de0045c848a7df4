"""Where a reviewer's tools read a published repository from: a directory or an HTTP(S) URL.

``open_source`` is the one parser of a SOURCE argument, and ``parse_state`` of a STATE
(``SOURCE`` or ``SOURCE@targets:4``), so ``inspect``, ``inspect diff`` and ``inspect history``
read them the same way. Every source is read-only and bounded
(P4: size per file, a socket timeout and a total deadline per request) and fetches only names
of the fixed metadata pattern (P3: an untrusted name is never a path — a version number read
from metadata turns into ``N.snapshot.json``, nothing else). Targets (the artifacts) are never
fetched: inspecting a repository reads metadata only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tuf.api import exceptions as tuf_exc

from repo.errors import RepositoryStateError, UsageError
from repo.inspect_report import PICK_ROLES, Pick
from verifier.errors import InvalidMetadataError
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import HttpFetcher
from verifier.tuf.published import MAX_METADATA_BYTES, DirectorySource, MetadataSource
from verifier.tuf.transfer import TransferLimits

#: The only names a source serves: versioned roles (top-level, or delegated with a name of
#: ``repo.inspect_report.ROLE_NAME``: no separator, never a path) and the timestamp.
METADATA_NAME = re.compile(
    r"^(?:[1-9][0-9]{0,9}\.(?:root|snapshot|targets|[a-z0-9][a-z0-9._-]{0,79})|timestamp)\.json\Z"
)

#: Bounds of one HTTP metadata request: no answer for this long is a failure ...
HTTP_SOCKET_TIMEOUT_S = 20.0
#: ... and neither may a server that answers drip-feed one file for longer than this.
HTTP_DEADLINE_S = 60.0


def check_name(name: str) -> str:
    """``name`` if it is a metadata file name of the fixed pattern, else refuse it."""
    if not METADATA_NAME.match(name):
        raise InvalidMetadataError(
            f"expected a metadata file name like 2.root.json or timestamp.json, found {name!r}"
        )
    return name


@dataclass(frozen=True)
class LocalSource:
    """A repository directory (the one holding ``metadata/``), read through the device's
    bounded ``DirectorySource``."""

    repo_dir: Path
    max_bytes: int = MAX_METADATA_BYTES

    def get(self, name: str, /) -> bytes | None:
        return DirectorySource(self.repo_dir / "metadata", self.max_bytes).get(check_name(name))

    def names(self) -> list[str]:
        """The metadata files held (so a gap in the root history shows, see
        ``verifier.tuf.published.check_root_history``); only names a source serves."""
        listed = DirectorySource(self.repo_dir / "metadata", self.max_bytes).names()
        return sorted(n for n in listed if METADATA_NAME.match(n))

    def __str__(self) -> str:
        return str(self.repo_dir)


@dataclass(frozen=True)
class HttpSource:
    """A repository served over HTTP(S): ``BASE/metadata/NAME`` through the device's fetcher
    (no retries, no redirects), each file bounded in size and time."""

    base_url: str
    max_bytes: int = MAX_METADATA_BYTES
    socket_timeout: float = HTTP_SOCKET_TIMEOUT_S
    deadline: float = HTTP_DEADLINE_S
    _fetcher: HttpFetcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = TransferLimits(
            connect_timeout=self.socket_timeout,
            read_timeout=self.socket_timeout,
            download_deadline=self.deadline,
        )
        object.__setattr__(self, "_fetcher", HttpFetcher(limits))

    def get(self, name: str, /) -> bytes | None:
        url = f"{self.base_url.rstrip('/')}/metadata/{check_name(name)}"
        try:
            return self._read(url)
        except tuf_exc.DownloadHTTPError as e:
            if e.status_code == 404:
                return None
            raise map_tuf_error(e, f"reading {url}") from e
        except tuf_exc.DownloadError as e:
            raise map_tuf_error(e, f"reading {url}") from e

    def _read(self, url: str) -> bytes:
        # the deadline (and a minimum throughput) is the fetcher's: it holds during a read
        chunks: list[bytes] = []
        size = 0
        for chunk in self._fetcher.fetch(url):
            size += len(chunk)
            if size > self.max_bytes:
                raise InvalidMetadataError(f"{url}: larger than {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def __str__(self) -> str:
        return self.base_url


#: ``SOURCE@ROLE:VERSION`` (``REPO@targets:4``); ROLE without ``/``, so the ``@`` of a URL's
#: user part (``http://user@host:8080/r``) is not taken for one
STATE_SUFFIX = re.compile(r"^(?P<source>.+)@(?P<role>[A-Za-z]+):(?P<version>[^@]*)$")


def parse_state(text: str) -> tuple[LocalSource | HttpSource, Pick | None]:
    """The source and the version a STATE argument names: ``SOURCE`` (its current state) or
    ``SOURCE@ROLE:N`` (the state as of version N of ROLE; ``repo.inspect_report.Pick``)."""
    m = STATE_SUFFIX.match(text)
    if m is None or (m["role"] not in PICK_ROLES and "/" in m["version"]):
        return open_source(text), None
    role, version = m["role"], m["version"]
    if role not in PICK_ROLES:
        raise UsageError(
            f"{text}: expected SOURCE@ROLE:N with ROLE one of {', '.join(PICK_ROLES)}, "
            f"found {role!r}"
        )
    if not re.fullmatch(r"[1-9][0-9]{0,9}", version):
        raise UsageError(
            f"{text}: expected a version number (1, 2, ...) after {role}:, found {version!r}"
        )
    return open_source(m["source"]), Pick(role, int(version))


def open_source(text: str) -> LocalSource | HttpSource:
    """The source a SOURCE argument names: an ``http(s)://`` base URL (the repository root,
    with ``metadata/`` below it) or a repository directory."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        if not re.match(r"^https?://[^/?#]+", text):
            raise UsageError(
                f"SOURCE: expected a repository directory or an http(s):// URL, found {text!r}"
            )
        return HttpSource(text.rstrip("/"))
    repo_dir = Path(text)
    if not (repo_dir / "metadata").is_dir():
        raise RepositoryStateError(
            f"{text}: expected a repository directory with metadata/ below it, found "
            + ("a directory without one" if repo_dir.is_dir() else "nothing there"),
            hint="give the repository root (the directory that holds metadata/ and targets/)",
        )
    return LocalSource(repo_dir)


__all__ = [
    "HttpSource",
    "LocalSource",
    "MetadataSource",
    "check_name",
    "open_source",
    "parse_state",
]
