"""The delegation search: which targets roles a device reads to enumerate its candidates.

TUF resolves one *path* at a time (ngclient's ``get_targetinfo``): a pre-order depth-first walk
from the top-level targets, children in the order their delegator lists them, a terminating
role that matches ending the search, at most ``max_delegations`` roles visited. A device
does not know the paths of images it has never seen, so it first has to *enumerate*: this
module walks the same tree with the same rules, but matching the device's product prefix
(``PRODUCT/…``) instead of one path:

* a delegated role is descended into when one of its path patterns can match a path
  ``PRODUCT/<name>`` (two or more segments, the first matching the product);
* a role with ``path_hash_prefixes`` and succinct hash bins (TAP 15) are *not* walked: they
  hold older versions, found by path only (``get_targetinfo``), so a refresh never downloads
  every bin;
* a terminating role that covers *every* path of the product (``PRODUCT/*/*``, otakit's
  ``PRODUCT/VERSION/FILE``) ends the walk (nothing after it, sibling or pending, is
  visited), as ngclient ends the search for each of those paths; a terminating role that
  covers only some (``PRODUCT/1.*/*``), or a walk for every product, goes on, since TUF
  would still search on for the paths it does not match;
* at most ``max_roles`` delegated roles are visited; the rest are left out with a warning,
  as ngclient does, so the enumeration never lists a path ngclient would not resolve.

The walk is pure: ``load(role, parent)`` returns the role's *verified* targets (ngclient
online, the trusted store offline). What it enumerates is only a list of paths to ask TUF
about: every candidate is then resolved with ``get_targetinfo(path)``, so a role listing a
path outside its delegation (a forged or buggy product role) cannot make it count.

``verify_delegated`` is the offline check of one stored or published delegated role, the same
as ngclient's: the version and (if recorded) length and hashes the snapshot names, and a
threshold of distinct keys of its delegator.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from tuf.api.metadata import DelegatedRole, Metadata, MetaFile, Targets  # type: ignore[attr-defined]

from verifier.errors import InvalidMetadataError
from verifier.tuf.checks import check_meta, check_signatures, parse_metadata

log = logging.getLogger("otakit.tuf")

#: ``(role name, delegating role name) -> that role's verified targets``
LoadFn = Callable[[str, str], Targets]


@dataclass(frozen=True)
class Visit:
    """One targets role reached by the walk, in visiting order."""

    name: str
    parent: str
    targets: Targets


def admits_product(role: DelegatedRole, product: str | None) -> bool:
    """Whether ``role`` may hold targets ``PRODUCT/…`` (None: any product).

    python-tuf matches a pattern segment by segment (``fnmatch``) and only against paths of
    as many segments, so ``*`` alone never matches ``PRODUCT/name``; a pattern admits the
    product when it has two or more segments and its first matches the product.
    """
    if role.paths is None:  # path_hash_prefixes: found by path only
        return False
    for pattern in role.paths:
        first, sep, _rest = pattern.partition("/")
        if sep and (product is None or fnmatch.fnmatchcase(product, first)):
            return True
    return False


def covers_product(role: DelegatedRole, product: str) -> bool:
    """Whether ``role`` matches every otakit path of ``product`` (``PRODUCT/VERSION/FILE``)."""
    for pattern in role.paths or ():
        first, *rest = pattern.split("/")
        if rest == ["*", "*"] and fnmatch.fnmatchcase(product, first):
            return True
    return False


def walk_roles(top: Targets, load: LoadFn, product: str | None, max_roles: int) -> list[Visit]:
    """The targets roles holding ``product``'s enumerable targets, top-level first.

    Pre-order depth-first as ngclient's path search (module docstring); ``load`` is called
    once per role visited, at most ``max_roles`` times.
    """
    visits = [Visit("targets", "root", top)]
    seen = {"targets"}
    stack, _ = _children(top, "targets", product)
    loaded = 0
    while stack:
        name, parent = stack.pop()
        if name in seen:  # a cycle, or a role delegated twice: visited once
            continue
        if loaded >= max_roles:
            log.warning(
                "delegation search: %d role(s) left unvisited, at most %d delegated roles "
                "are read (TufLimits.max_delegations)",
                len(stack) + 1,
                max_roles,
            )
            break
        targets = load(name, parent)
        loaded += 1
        seen.add(name)
        visits.append(Visit(name, parent, targets))
        children, terminated = _children(targets, name, product)
        if terminated:
            stack = []
        stack.extend(children)
    return visits


def _children(
    targets: Targets, name: str, product: str | None
) -> tuple[list[tuple[str, str]], bool]:
    """The child roles to visit, reversed for popping (first listed is visited first), and
    whether one of them is terminating (the walk then drops everything still pending)."""
    delegations = targets.delegations
    if delegations is None or delegations.roles is None:  # none, or succinct hash bins
        return [], False
    children: list[tuple[str, str]] = []
    terminated = False
    for role in delegations.roles.values():
        if not admits_product(role, product):
            continue
        children.append((role.name, name))
        if role.terminating and product is not None and covers_product(role, product):
            terminated = True
            break
    children.reverse()
    return children, terminated


def verify_delegated(
    data: bytes, role: str, delegator: Targets, meta: MetaFile | None, label: str
) -> Metadata[Targets]:
    """``data`` as delegated targets ``role``: named by the snapshot (``meta``), of that
    version, length and hashes, and signed by a threshold of ``delegator``'s keys for it."""
    if meta is None:
        raise InvalidMetadataError(
            f"{label}: expected an entry for {role}.json in the snapshot, found none"
        )
    check_meta(meta, data, role, "snapshot")
    md = cast(Metadata[Targets], parse_metadata(data, "targets", label))
    if md.signed.version != meta.version:
        raise InvalidMetadataError(
            f"{label}: expected version {meta.version} (the snapshot's), found {md.signed.version}"
        )
    check_signatures(delegator, role, md, label)
    return md


def listed_paths(visits: list[Visit]) -> list[str]:
    """Every path the visited roles list, once each, in visiting order."""
    out: dict[str, None] = {}
    for v in visits:
        for path in v.targets.targets:
            out.setdefault(path, None)
    return list(out)
