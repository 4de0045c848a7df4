"""Where a device's repository is: an HTTP(S) URL, or a local mirror (``file://`` or a path).

One function picks the fetcher for a repository URL, so ``update``, ``fetch`` and an
``update --from`` override all reach a repository the same way and everything above the
fetcher (TUF, plan, apply) is the one online path. A local mirror is a directory in the
repository's own layout (``metadata/``, ``targets/``) or an export tar of that layout
(``verifier.exporttar``), chosen by what the path is, never by its name alone.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from verifier.errors import UsageError
from verifier.tuf.fetcher import HttpFetcher, OtaFetcher
from verifier.tuf.localfetch import DirMedium, LocalFetcher, file_url, url_path
from verifier.tuf.transfer import TransferLimits

_HTTP_RE = re.compile(r"^https?://[^\s]+\Z")
_HINT = "give an http(s):// URL, a file:///absolute/path URL, or an absolute path"


def repo_url(text: str) -> str:
    """The stored form of a ``--repo-url`` / ``--from``: http(s) as given, a local mirror
    as a ``file://`` URL of its absolute path (``file:///media/usb/otakit`` or the path)."""
    if _HTTP_RE.match(text):
        return text
    if text.startswith("/") and "\0" not in text:
        return file_url(Path(text))
    if text.startswith("file:"):
        path = url_path(text)
        if path is not None:
            return file_url(path)
    raise UsageError(f"--repo-url: expected a repository location, found {text!r}", hint=_HINT)


def is_local(url: str) -> bool:
    return url.startswith("file:")


def fetcher_for(url: str, limits: TransferLimits) -> OtaFetcher:
    """The fetcher for repository ``url``: HTTP with ``limits``, or a local medium (a
    directory, or a regular file read as an export tar)."""
    if not is_local(url):
        return HttpFetcher(limits)
    path = url_path(url)
    if path is None:
        raise UsageError(f"expected a file:///absolute/path URL, found {url!r}", hint=_HINT)
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0  # absent now: DirMedium reports it when the first file is read
    if stat.S_ISREG(mode):
        from verifier.exporttar import TarMedium

        return LocalFetcher(url, TarMedium.index(path))
    return LocalFetcher(url, DirMedium(path))
