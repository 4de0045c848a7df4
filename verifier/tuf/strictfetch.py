"""What ngclient downloads is prechecked before ngclient parses it.

ngclient's public plug-in point for bytes from the network is the fetcher: every metadata file
it loads from the repository comes back through ``download_bytes``. Wrapping the device's
fetcher there puts ``checks.precheck`` (strict JSON, no signature listed twice, no key under
two ids) in front of python-tuf without touching its internals. Targets are not fetched
through ngclient (``update`` streams them itself, verified against their signed hashes), so
everything that passes here is metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib import parse

from tuf.ngclient.fetcher import FetcherInterface

from verifier.tuf.checks import precheck


class PrecheckingFetcher(FetcherInterface):
    """``inner`` with every downloaded metadata file prechecked (raises our errors)."""

    def __init__(self, inner: FetcherInterface) -> None:
        self.inner = inner
        #: the metadata file downloaded last: ngclient verifies each file right after its
        #: download, so a verification failure (a length or hash that differs from what the
        #: referrer signed, expiry) is about this file, which its message does not name
        self.last_file: str | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.inner.fetch(url)

    def download_bytes(self, url: str, max_length: int) -> bytes:
        data = self.inner.download_bytes(url, max_length)
        name = parse.unquote(parse.urlsplit(url).path.rpartition("/")[2]) or url
        self.last_file = name
        precheck(data, f"{name} from the repository")
        return data
