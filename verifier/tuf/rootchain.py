"""The one root-chain walk (TUF 5.3.4-5), used by the device and by the publisher.

From a trusted root, each next root ``N+1`` is accepted only if it parses as root metadata of
exactly version ``N+1`` and is signed by a threshold of root ``N``'s keys *and* of its own.
The walk never raises for a bad next root: it stops and reports where and why, because the
callers differ. The publisher reading its own repository refuses the repository
(``verify_published``); the device reading the roots it stored keeps the last good root and
lets the next refresh fetch a fresh copy (``client.newest_verified_root``). Only the trusted
starting root failing its own checks is raised, for both.

Expiry is not checked: intermediate roots may long have expired; callers check the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]

from verifier.errors import InvalidMetadataError, MetadataError
from verifier.tuf.checks import check_signatures, parse_metadata

#: More versions than any real repository has; bounds a walk over a hostile directory.
MAX_ROOT_VERSIONS = 10_000


def root_filename(version: int) -> str:
    return f"{version}.root.json"


@dataclass(frozen=True)
class TrustedRoot:
    """One root of the chain: its version, exact bytes and parsed metadata."""

    version: int
    data: bytes = field(repr=False)
    metadata: Metadata[Root] = field(repr=False, compare=False)


@dataclass(frozen=True)
class RootChain:
    """The roots walked, oldest first, and why the walk stopped (None: no next root exists)."""

    roots: tuple[TrustedRoot, ...]
    #: the failure of the first root *not* accepted: a bad link, a wrong version, the bound
    stop: MetadataError | None = None

    @property
    def newest(self) -> TrustedRoot:
        return self.roots[-1]

    @property
    def previous(self) -> TrustedRoot | None:
        """The root before the newest one, if the walk moved at all."""
        return self.roots[-2] if len(self.roots) > 1 else None


def walk_root_chain(
    trusted: bytes,
    next_root: Callable[[int], bytes | None],
    *,
    label: str,
    trusted_name: str = "trusted root",
    max_versions: int = MAX_ROOT_VERSIONS,
) -> RootChain:
    """Walk from the ``trusted`` root bytes over ``next_root(version)`` (None: not there).

    ``label`` prefixes messages ("published", "stored"); ``trusted_name`` names the starting
    root in them. Raises only if ``trusted`` itself is not root metadata signed by its own
    threshold.
    """
    first = _root(trusted, cast(Metadata[Root], parse_metadata(trusted, "root", trusted_name)))
    check_signatures(first.metadata.signed, "root", first.metadata, f"{label} root")
    chain = [first]
    while (data := next_root(chain[-1].version + 1)) is not None:
        if len(chain) >= max_versions:
            stop = InvalidMetadataError(
                f"more than {max_versions} root versions after root v{first.version}"
            )
            return RootChain(tuple(chain), stop)
        try:
            chain.append(_link(chain[-1], data, label))
        except MetadataError as e:
            return RootChain(tuple(chain), e)
    return RootChain(tuple(chain))


def _root(data: bytes, md: Metadata[Root]) -> TrustedRoot:
    return TrustedRoot(md.signed.version, data, md)


def _link(prev: TrustedRoot, data: bytes, label: str) -> TrustedRoot:
    version = prev.version + 1
    name = root_filename(version)
    md = cast(Metadata[Root], parse_metadata(data, "root", name))
    if md.signed.version != version:
        raise InvalidMetadataError(f"{name}: expected version {version}, found {md.signed.version}")
    check_signatures(prev.metadata.signed, "root", md, f"{label} root")
    check_signatures(md.signed, "root", md, f"{label} root")
    return _root(data, md)
