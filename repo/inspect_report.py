"""What a security reviewer sees of a published repository, trusted from a pinned root.

``build_report`` reads metadata bytes from a source and returns an ``InspectReport``; the
reference time is an argument, nothing is written. It walks the pieces the way
``verifier.tuf.published.verify_published`` does, with the same lower-level checks (the root
chain walk, parsing, signature thresholds with each key counted once, lengths and hashes,
expiry), but records each failure and goes on where it can instead of stopping at the first,
so a repository that does not verify is still shown with every problem pointed out.
``verify_published`` stays the one yes/no verifier: the report's verdict is its answer, and
the tests check that the recorded failures agree with it on every bad repository.

``build_report`` shows the current state (timestamp -> snapshot -> targets) or, given a
``Pick``, the state as of one version of one role (``REPO@targets:4``): root N alone, or
snapshot N and the targets it records, or targets N alone. A past version is judged by the
same signature and hash checks, under the newest root of the chain whose keys accept it (the
root in force when it was signed), but not for expiry (a superseded version expiring is
normal); ``verify_published`` only answers for the current state, so a past version's
verdict is the walk's own.

The report also notes what python-tuf accepts silently but a reviewer must see: duplicate
JSON keys (the parser keeps the last one, so two readers may disagree on the content) and
fields no TUF reader knows. Judging the report is ``repo.findings``' job.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Key,
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)

from repo.delegation import HEAD_FIELD
from verifier import strictjson
from verifier.artifact import ArtifactInfo
from verifier.artifact_view import artifact_fields
from verifier.demokeys import is_demo_key
from verifier.errors import ArtifactSchemaError, MetadataError, UsageError
from verifier.tuf.checks import (
    TOP_LEVEL_ROLES,
    check_expiry,
    check_meta,
    check_signatures,
    parse_metadata,
    parse_version,
)
from verifier.tuf.delegations import verify_delegated
from verifier.tuf.published import ListableSource, MetadataSource, verify_published
from verifier.tuf.rootchain import (
    MAX_ROOT_VERSIONS,
    TrustedRoot,
    root_filename,
    walk_root_chain,
)

_T = TypeVar("_T")

#: Version of the ``--json`` document of ``otakit inspect`` (docs/INSPECT.md).
INSPECT_JSON_VERSION = 1


#: The roles a ``Pick`` may name.
PICK_ROLES = ("root", "timestamp", "snapshot", "targets")


@dataclass(frozen=True)
class Pick:
    """One version of one role: the repository state a reviewer asks for with
    ``REPO@targets:4`` (``repo.sources.parse_state`` parses it)."""

    role: str
    version: int

    def __post_init__(self) -> None:
        if self.role not in PICK_ROLES or self.version < 1:
            raise UsageError(
                f"expected a role of {', '.join(PICK_ROLES)} and a version >= 1, "
                f"found {self.role}:{self.version}"
            )

    def __str__(self) -> str:
        return f"{self.role}:{self.version}"


@dataclass(frozen=True)
class KeyInfo:
    """A key of the newest root or of a delegation, and every role that lists it."""

    keyid: str
    keytype: str
    scheme: str
    demo: bool
    #: RSA modulus or EC curve size, when the key's public value could be read
    bits: int | None
    #: sha256 of the key type and public value: two ids of one key share it
    fingerprint: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class RoleInfo:
    """One top-level role: what the newest root grants it and what its published file holds.

    ``version``/``expires`` are None when the file was not reached (a failure says why)."""

    name: str
    threshold: int
    keyids: tuple[str, ...]
    file: str | None = None
    version: int | None = None
    expires: datetime | None = None
    signatures_present: int = 0
    #: authorized key ids with a valid signature, and those without one
    signatures_valid: tuple[str, ...] = ()
    signatures_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class RootLink:
    """One step of the root chain from the pinned root (``problem``: why it was refused)."""

    version: int
    problem: str | None = None


@dataclass(frozen=True)
class Failure:
    """A verification failure: where, its stable error kind, and the verifier's message."""

    where: str
    kind: str
    message: str


@dataclass(frozen=True)
class Anomaly:
    """Something a TUF parser accepts that a reviewer must see (``duplicate-key``,
    ``unknown-field``), with where in which file."""

    file: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Delegation:
    """A delegated role as the delegating metadata describes it (not fetched)."""

    delegator: str
    name: str
    threshold: int
    keyids: tuple[str, ...]
    terminating: bool
    paths: tuple[str, ...] | None
    path_hash_prefixes: tuple[str, ...] | None


@dataclass(frozen=True)
class TargetInfo:
    """A target of the top-level targets role and its otakit artifact metadata.

    ``artifact`` is None when ``custom`` holds no otakit entry (``artifact_error`` None) or
    an entry the device would refuse (``artifact_error`` says why)."""

    path: str
    length: int
    hashes: tuple[tuple[str, str], ...]
    artifact: ArtifactInfo | None
    artifact_error: str | None
    #: why the path is not a safe relative name (None: it is)
    path_problem: str | None
    #: the targets role listing it: ``targets``, a product role or one of its hash bins
    role: str = "targets"


@dataclass(frozen=True)
class DelegatedRoleInfo:
    """A delegated targets role as published: the file the snapshot names, checked like a
    device checks it (``verifier.tuf.delegations.verify_delegated``: version, length and
    hashes, a threshold of its delegator's keys, expiry). ``problem`` says why a device
    would refuse it (None: it would not); it is not part of the top-level verdict."""

    name: str
    delegator: str
    threshold: int
    keyids: tuple[str, ...]
    file: str | None
    version: int | None
    expires: datetime | None
    signatures_present: int
    signatures_valid: tuple[str, ...]
    signatures_missing: tuple[str, ...]
    targets: int
    problem: str | None


@dataclass(frozen=True)
class InspectReport:
    source: str
    at: datetime
    pinned_root_version: int
    root_chain: tuple[RootLink, ...]
    roles: tuple[RoleInfo, ...]
    keys: tuple[KeyInfo, ...]
    consistent_snapshot: bool
    delegations: tuple[Delegation, ...]
    targets: tuple[TargetInfo, ...]
    anomalies: tuple[Anomaly, ...]
    failures: tuple[Failure, ...]
    #: ``verify_published``'s answer from the pinned root at ``at`` (for a ``pick``: no
    #: failure recorded)
    verified: bool
    #: the version shown, None for the current state
    pick: Pick | None = None
    #: the root whose grants the roles are shown and checked under (None: the newest)
    authority_version: int | None = None
    #: delegated roles fetched through the snapshot (product roles, then their bins)
    delegated_roles: tuple[DelegatedRoleInfo, ...] = ()

    @property
    def newest_root_version(self) -> int:
        return max(link.version for link in self.root_chain if link.problem is None)

    @property
    def root_version(self) -> int:
        """The root the report's roles and keys come from."""
        return self.authority_version or self.newest_root_version

    def role(self, name: str) -> RoleInfo:
        return next(r for r in self.roles if r.name == name)


# --- building --------------------------------------------------------------------------------


@dataclass
class _Files:
    """Each name fetched once (the walk and ``verify_published`` read the same bytes)."""

    source: MetadataSource
    got: dict[str, bytes | None] = field(default_factory=dict)

    def get(self, name: str, /) -> bytes | None:
        if name not in self.got:
            self.got[name] = self.source.get(name)
        return self.got[name]

    def names(self) -> list[str]:
        """The source's listing when it has one (a directory), else nothing to list."""
        return list(self.source.names()) if isinstance(self.source, ListableSource) else []


@dataclass
class _Walk:
    failures: list[Failure] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)

    def attempt(self, where: str, check: Callable[[], _T]) -> _T | None:
        """``check()``'s value, or None with its failure recorded."""
        try:
            return check()
        except MetadataError as e:
            self.failures.append(Failure(where, e.kind(), e.message))
            return None


def build_report(
    source: MetadataSource,
    pinned_root: bytes,
    at: datetime,
    *,
    source_name: str = "",
    max_root_versions: int = MAX_ROOT_VERSIONS,
    pick: Pick | None = None,
) -> InspectReport:
    """The report of ``source`` trusted from ``pinned_root`` at time ``at``, of its current
    state or of the version ``pick`` names (module docstring).

    Raises only when the pinned root itself is not root metadata signed by its own
    threshold (there is nothing to trust from), when the source cannot be read, or when
    ``pick`` names a version the source does not hold (``UsageError``).
    """
    files = _Files(source)
    walk = _Walk()
    last = pick.version if pick is not None and pick.role == "root" else None
    chain = walk_root_chain(
        pinned_root,
        lambda v: files.get(root_filename(v)) if last is None or v <= last else None,
        label="published",
        trusted_name="the pinned root",
        max_versions=max_root_versions,
    )
    links = [RootLink(r.version) for r in chain.roots]
    for r in chain.roots:
        walk.anomalies += _anomalies(root_filename(r.version), r.data, r.metadata)
    if chain.stop is not None:
        links.append(RootLink(chain.newest.version + 1, chain.stop.message))
        walk.failures.append(Failure("root", chain.stop.kind(), chain.stop.message))
    roles: dict[str, RoleInfo] = {}
    parsed: dict[str, Metadata[Any]] = {}
    targets: Metadata[Targets] | None = None
    authority = chain.newest
    if pick is None or pick.role == "timestamp":
        walk.attempt("root", partial(check_expiry, authority.metadata, at))
        targets, _ = _online_roles(files, (authority,), "timestamp", None, at, walk, roles, parsed)
        now = roles.get("timestamp")
        if pick is not None and (now is None or now.version != pick.version):
            raise _not_held(source_name, pick, "timestamp.json", chain.newest, roles)
    elif pick.role == "root":
        if chain.stop is None and chain.newest.version != pick.version:
            name = root_filename(max(chain.newest.version + 1, pick.version))
            raise _not_held(source_name, pick, name, chain.newest, roles)
    else:
        name = f"{pick.version}.{pick.role}.json"
        if files.get(name) is None:
            raise _not_held(source_name, pick, name, chain.newest, roles)
        newest_first = tuple(reversed(chain.roots))
        targets, authority = _online_roles(
            files, newest_first, pick.role, pick.version, None, walk, roles, parsed
        )
    roles["root"] = _role_info(
        authority.metadata.signed, "root", root_filename(authority.version), authority.metadata
    )
    grants = authority.metadata.signed
    snapshot = cast("Metadata[Snapshot] | None", parsed.get("snapshot"))
    current = pick is None or pick.role == "timestamp"
    delegated = (
        _delegated(files, snapshot.signed, targets.signed, at if current else None, walk)
        if snapshot is not None and targets is not None
        else []
    )
    verified = (
        _verified(files, pinned_root, at, max_root_versions, walk)
        if pick is None or pick.role == "timestamp"
        else not walk.failures
    )
    return InspectReport(
        source=source_name,
        at=at,
        pinned_root_version=chain.roots[0].version,
        root_chain=tuple(links),
        roles=tuple(roles.get(r) or _role_info(grants, r, None, None) for r in TOP_LEVEL_ROLES),
        keys=_keys(grants, targets, [md for _, _, md in delegated]),
        consistent_snapshot=grants.consistent_snapshot is True,
        delegations=_delegations(targets)
        + tuple(d for name, _, md in delegated for d in _delegations(md, name)),
        targets=_targets(targets)
        + tuple(t for name, _, md in delegated for t in _targets(md, name)),
        anomalies=tuple(walk.anomalies),
        failures=tuple(walk.failures),
        verified=verified,
        pick=pick,
        authority_version=authority.version,
        delegated_roles=tuple(info for _, info, _ in delegated),
    )


#: delegated roles a report fetches at most (product roles and bins together; P4)
MAX_DELEGATED_ROLES = 4096
#: a delegated role name that may become part of a file name (P3): otakit's product names
#: and their bins, nothing with a separator
ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}\Z")


def _delegated(
    files: _Files, snapshot: Snapshot, top: Targets, at: datetime | None, walk: _Walk
) -> list[tuple[str, DelegatedRoleInfo, Metadata[Targets] | None]]:
    """Every delegated role the snapshot names, depth first from ``top`` (a product role,
    then its bins), each fetched once and checked against its delegator; at most
    ``MAX_DELEGATED_ROLES`` (the rest are recorded as not fetched)."""
    out: list[tuple[str, DelegatedRoleInfo, Metadata[Targets] | None]] = []
    pending = [(n, "targets", top) for n in reversed(_children(top))]
    seen: set[str] = set()
    while pending:
        name, delegator, parent = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        role = parent.get_delegated_role(name)
        base = (name, delegator, role.threshold, tuple(role.keyids))
        meta = snapshot.meta.get(f"{name}.json")
        problem = None
        if len(out) >= MAX_DELEGATED_ROLES:
            problem = f"not fetched: more than {MAX_DELEGATED_ROLES} delegated roles"
        elif not ROLE_NAME.match(name):
            problem = "not fetched: the role name is not a safe file name"
        elif meta is None:
            problem = "the snapshot lists no file for it"
        if problem is not None:
            out.append(
                (name, DelegatedRoleInfo(*base, None, None, None, 0, (), (), 0, problem), None)
            )
            continue
        assert meta is not None
        file = f"{meta.version}.{name}.json"
        data = files.get(file)
        if data is None:
            info = DelegatedRoleInfo(
                *base, file, None, None, 0, (), (), 0, f"expected {file}, found none"
            )
            out.append((name, info, None))
            continue
        try:
            md = verify_delegated(data, name, parent, meta, f"published {file}")
            if at is not None:
                check_expiry(md, at)
            problem = None
        except MetadataError as e:
            problem = e.message
            try:
                md = cast(Metadata[Targets], parse_metadata(data, "targets", file))
            except MetadataError:
                out.append(
                    (name, DelegatedRoleInfo(*base, file, None, None, 0, (), (), 0, problem), None)
                )
                continue
        walk.anomalies += _anomalies(file, data, md)
        result = parent.get_verification_result(name, md.signed_bytes, md.signatures)
        info = DelegatedRoleInfo(
            *base,
            file,
            md.signed.version,
            md.signed.expires,
            len(md.signatures),
            tuple(sorted(result.signed)),
            tuple(sorted(result.unsigned)),
            len(md.signed.targets),
            problem,
        )
        out.append((name, info, md))
        pending += [(n, name, md.signed) for n in reversed(_children(md.signed))]
    return out


def _children(t: Targets) -> list[str]:
    dl = t.delegations
    if dl is None:
        return []
    if dl.roles is not None:
        return list(dl.roles)
    return list(dl.succinct_roles.get_roles()) if dl.succinct_roles is not None else []


def _not_held(
    source: str, pick: Pick, name: str, newest: TrustedRoot, roles: dict[str, RoleInfo]
) -> UsageError:
    """``pick`` names a version ``source`` does not hold: say which file was expected and
    why it may be missing."""
    at = f"{source}@{pick}" if source else str(pick)
    if pick.role == "timestamp":
        now = roles.get("timestamp")
        found = f"v{now.version}" if now is not None and now.version else "none readable"
        return UsageError(
            f"{at}: only the current timestamp is kept ({name}), expected v{pick.version}, "
            f"found {found}",
            hint="compare snapshot or targets versions instead (REPO@snapshot:N)",
        )
    if pick.role == "root" and newest.version > pick.version:
        return UsageError(
            f"{at}: expected a root at or after the pinned root, found root v{pick.version} "
            f"before the pinned root v{newest.version}",
            hint="pin an older root to compare versions before it",
        )
    if pick.role != "root" and newest.metadata.signed.consistent_snapshot is not True:
        return UsageError(
            f"{at}: expected metadata/{name}, found none: this repository does not keep "
            f"versioned {pick.role} files (consistent snapshots are off)",
            hint="only the current state can be inspected; compare two copies of the repository",
        )
    return UsageError(
        f"{at}: expected metadata/{name}, found none",
        hint=f"'otakit inspect history' lists the {pick.role} versions the repository keeps",
    )


#: the role each online role's metadata names next, down to targets
_NEXT = {"timestamp": "snapshot", "snapshot": "targets"}


def _online_roles(
    files: _Files,
    authorities: tuple[TrustedRoot, ...],
    start: str,
    version: int | None,
    at: datetime | None,
    walk: _Walk,
    roles: dict[str, RoleInfo],
    parsed: dict[str, Metadata[Any]],
) -> tuple[Metadata[Targets] | None, TrustedRoot]:
    """From ``start`` down to targets, as far as each file can be read and parsed.

    The first file is ``timestamp.json`` (``version`` None) or ``VERSION.START.json``; it
    picks the authority for the rest: the newest of ``authorities`` whose keys accept it
    (the first when none does, under which the failure is recorded). Expiry is judged at
    ``at`` (None: not judged)."""
    referrer, role, meta = "", start, None
    name = "timestamp.json" if version is None else f"{version}.{start}.json"
    authority = authorities[0]
    while True:
        data = files.get(name)
        if data is None:
            named = f" (named by {referrer})" if referrer else ""
            walk.failures.append(
                Failure(role, "invalid-metadata", f"expected {name}{named}, found none")
            )
            return None, authority
        if meta is not None:
            walk.attempt(role, partial(check_meta, meta, data, role, referrer))
        want = meta.version if meta is not None else version
        md = walk.attempt(
            role,
            partial(parse_metadata, data, role, name)
            if want is None
            else partial(parse_version, data, role, want),
        )
        if md is None:
            return None, authority
        walk.anomalies += _anomalies(name, data, md)
        if not referrer:
            authority = _authority(authorities, role, md)
        grants = authority.metadata.signed
        walk.attempt(role, partial(check_signatures, grants, role, md, f"published {role}"))
        if at is not None:
            walk.attempt(role, partial(check_expiry, md, at))
        roles[role] = _role_info(grants, role, name, md)
        parsed[role] = md
        if role == "targets":
            return cast(Metadata[Targets], md), authority
        referrer = name
        if role == "timestamp":
            meta = cast(Metadata[Timestamp], md).signed.snapshot_meta
        else:
            meta = cast(Metadata[Snapshot], md).signed.meta.get("targets.json")
            if meta is None:
                walk.failures.append(
                    Failure(
                        "targets",
                        "invalid-metadata",
                        f"snapshot v{md.signed.version}: expected an entry for targets.json, "
                        "found none",
                    )
                )
                return None, authority
        role = _NEXT[role]
        name = f"{meta.version}.{role}.json"


def _authority(roots: tuple[TrustedRoot, ...], role: str, md: Metadata[Any]) -> TrustedRoot:
    """The first (newest) of ``roots`` whose keys for ``role`` accept ``md``, else the first."""
    for r in roots:
        try:
            check_signatures(r.metadata.signed, role, md, role)
        except MetadataError:
            continue
        return r
    return roots[0]


def _verified(
    files: _Files, pinned_root: bytes, at: datetime, max_root_versions: int, walk: _Walk
) -> bool:
    """``verify_published``'s verdict; its error is recorded should the walk have missed it
    (it cannot, and a test says so; a verdict must never come without its reason)."""
    try:
        verify_published(files, pinned_root, reference_time=at, max_root_versions=max_root_versions)
    except MetadataError as e:
        if not walk.failures:
            walk.failures.append(Failure("repository", e.kind(), e.message))
        return False
    return True


def _role_info(authority: Root, role: str, file: str | None, md: Metadata[Any] | None) -> RoleInfo:
    granted = authority.roles[role]
    if md is None:
        return RoleInfo(role, granted.threshold, tuple(granted.keyids))
    try:
        result = authority.get_verification_result(role, md.signed_bytes, md.signatures)
        valid, missing = tuple(sorted(result.signed)), tuple(sorted(result.unsigned))
    except ValueError:  # the root grants no usable keys: checks.py reports it as a failure
        valid, missing = (), tuple(granted.keyids)
    return RoleInfo(
        role,
        granted.threshold,
        tuple(granted.keyids),
        file,
        md.signed.version,
        md.signed.expires,
        len(md.signatures),
        valid,
        missing,
    )


def _keys(
    authority: Root,
    targets: Metadata[Targets] | None,
    delegated: Sequence[Metadata[Targets] | None] = (),
) -> tuple[KeyInfo, ...]:
    holders: dict[str, list[str]] = {}
    known: dict[str, Key] = dict(authority.keys)
    for role in TOP_LEVEL_ROLES:
        for keyid in authority.roles[role].keyids:
            holders.setdefault(keyid, []).append(role)
    for md in (targets, *delegated):
        delegations = md.signed.delegations if md is not None else None
        if delegations is None:
            continue
        known.update(delegations.keys)
        for d in (delegations.roles or {}).values():
            for keyid in d.keyids:
                holders.setdefault(keyid, []).append(d.name)
        if (s := delegations.succinct_roles) is not None:
            for keyid in s.keyids:
                holders.setdefault(keyid, []).append(f"{s.name_prefix}-*")
    return tuple(
        _key_info(keyid, known[keyid], tuple(holders.get(keyid, ()))) for keyid in sorted(known)
    )


def _key_info(keyid: str, key: Key, roles: tuple[str, ...]) -> KeyInfo:
    public = json.dumps([key.keytype, key.keyval], sort_keys=True).encode()
    return KeyInfo(
        keyid,
        key.keytype,
        key.scheme,
        is_demo_key(keyid),
        _bits(key),
        hashlib.sha256(public).hexdigest(),
        roles,
    )


def _bits(key: Key) -> int | None:
    """The size of an RSA or EC public key (ed25519 has one size and needs none)."""
    pem = key.keyval.get("public")
    if key.keytype == "ed25519" or not isinstance(pem, str) or "BEGIN" not in pem:
        return None
    try:
        loaded = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return None
    size = getattr(loaded, "key_size", None)
    return size if isinstance(size, int) else None


def _delegations(
    targets: Metadata[Targets] | None, delegator: str = "targets"
) -> tuple[Delegation, ...]:
    delegations = targets.signed.delegations if targets is not None else None
    if delegations is None:
        return ()
    out = [
        Delegation(
            delegator,
            d.name,
            d.threshold,
            tuple(d.keyids),
            d.terminating,
            tuple(d.paths) if d.paths is not None else None,
            tuple(d.path_hash_prefixes) if d.path_hash_prefixes is not None else None,
        )
        for d in (delegations.roles or {}).values()
    ]
    if delegations.succinct_roles is not None:
        s = delegations.succinct_roles
        out.append(
            Delegation(
                delegator,
                f"{s.name_prefix}-* ({s.number_of_bins} hash bins)",
                s.threshold,
                tuple(s.keyids),
                True,
                None,
                None,
            )
        )
    return tuple(out)


def _targets(targets: Metadata[Targets] | None, role: str = "targets") -> tuple[TargetInfo, ...]:
    if targets is None:
        return ()
    out = []
    for path, tf in sorted(targets.signed.targets.items()):
        custom = tf.custom
        artifact, error = None, None
        if isinstance(custom, dict) and "otakit" in custom:
            try:
                artifact = ArtifactInfo.from_custom(custom)
            except ArtifactSchemaError as e:
                error = e.message
        out.append(
            TargetInfo(
                path,
                tf.length,
                tuple(sorted(tf.hashes.items())),
                artifact,
                error,
                path_problem(path),
                role,
            )
        )
    return tuple(out)


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative name of the form ``a/b/c`` (None: it is)."""
    if path.startswith("/"):
        return "an absolute path"
    if "\\" in path:
        return "a backslash, which some systems read as a path separator"
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return "a control character"
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts):
        return "a '..' or '.' component"
    if any(p == "" for p in parts):
        return "an empty component"
    return None


# --- what parsers accept silently ------------------------------------------------------------


def duplicate_keys(data: bytes) -> list[str]:
    """Object keys that occur twice in one object of the JSON ``data`` (parsers keep one).

    The device's own strict reader finds them (``verifier.strictjson``), so the reviewer is
    shown exactly what a device refuses."""
    return [d.key for d in strictjson.duplicates(data)]


def _anomalies(name: str, data: bytes, md: Metadata[Any]) -> list[Anomaly]:
    out = [Anomaly(name, "duplicate-key", f"key {k!r} appears twice") for k in duplicate_keys(data)]
    out += [Anomaly(name, "unknown-field", f) for f in _unknown_fields(md)]
    return out


#: fields otakit itself signs into a targets role (a product role's head size,
#: ``repo.delegation.HEAD_FIELD``): known, so not an anomaly
OTAKIT_FIELDS = frozenset({HEAD_FIELD})


def _unknown_fields(md: Metadata[Any]) -> list[str]:
    """Fields python-tuf keeps without knowing them, by where they are (``custom`` of a
    target is the one known field python-tuf files there)."""
    s = md.signed
    own = OTAKIT_FIELDS if isinstance(s, Targets) else frozenset()
    out = [f"{k}" for k in md.unrecognized_fields] + [
        f"signed.{k}" for k in s.unrecognized_fields if k not in own
    ]
    parts: list[tuple[str, dict[str, Any]]] = []
    if isinstance(s, Root):
        parts += [(f"signed.keys.{i}", k.unrecognized_fields) for i, k in s.keys.items()]
        parts += [(f"signed.roles.{n}", r.unrecognized_fields) for n, r in s.roles.items()]
    elif isinstance(s, Timestamp):
        parts.append(("signed.meta.snapshot.json", s.snapshot_meta.unrecognized_fields))
    elif isinstance(s, Snapshot):
        parts += [(f"signed.meta.{n}", m.unrecognized_fields) for n, m in s.meta.items()]
    elif isinstance(s, Targets):
        for path, tf in s.targets.items():
            extra = {k: v for k, v in tf.unrecognized_fields.items() if k != "custom"}
            parts.append((f"signed.targets.{path}", extra))
        if s.delegations is not None:
            parts.append(("signed.delegations", s.delegations.unrecognized_fields))
            for n, r in (s.delegations.roles or {}).items():
                parts.append((f"signed.delegations.roles.{n}", r.unrecognized_fields))
    for where, fields in parts:
        out += [f"{where}.{k}" for k in fields]
    return out


# --- JSON ------------------------------------------------------------------------------------


def json_time(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def artifact_json(a: ArtifactInfo) -> dict[str, Any]:
    return artifact_fields(a)


def key_json(k: KeyInfo) -> dict[str, Any]:
    return {**vars(k), "roles": list(k.roles)}


def target_json(t: TargetInfo) -> dict[str, Any]:
    return {
        "path": t.path,
        "length": t.length,
        "hashes": dict(t.hashes),
        "artifact": artifact_json(t.artifact) if t.artifact is not None else None,
        "artifact_error": t.artifact_error,
        "path_problem": t.path_problem,
        "role": t.role,
    }


def delegated_role_json(d: DelegatedRoleInfo, at: datetime) -> dict[str, Any]:
    return {
        "name": d.name,
        "delegator": d.delegator,
        "file": d.file,
        "version": d.version,
        "expires": json_time(d.expires),
        "seconds_left": int((d.expires - at).total_seconds()) if d.expires is not None else None,
        "threshold": d.threshold,
        "keyids": list(d.keyids),
        "signatures": {
            "present": d.signatures_present,
            "valid": list(d.signatures_valid),
            "missing": list(d.signatures_missing),
        },
        "targets": d.targets,
        "problem": d.problem,
    }


def failure_json(f: Failure) -> dict[str, Any]:
    return dict(vars(f))


def report_json(report: InspectReport) -> dict[str, Any]:
    """The versioned ``--json`` document (without findings; docs/INSPECT.md)."""
    return {
        "otakit_inspect": INSPECT_JSON_VERSION,
        "source": report.source,
        "at": json_time(report.at),
        "verified": report.verified,
        "state": str(report.pick) if report.pick is not None else "current",
        "root_version": report.root_version,
        "failures": [failure_json(f) for f in report.failures],
        "root_chain": {
            "pinned": report.pinned_root_version,
            "newest": report.newest_root_version,
            "links": [vars(link) for link in report.root_chain],
        },
        "consistent_snapshot": report.consistent_snapshot,
        "roles": [
            {
                "name": r.name,
                "file": r.file,
                "version": r.version,
                "expires": json_time(r.expires),
                "seconds_left": (
                    int((r.expires - report.at).total_seconds()) if r.expires is not None else None
                ),
                "threshold": r.threshold,
                "keyids": list(r.keyids),
                "signatures": {
                    "present": r.signatures_present,
                    "valid": list(r.signatures_valid),
                    "missing": list(r.signatures_missing),
                },
            }
            for r in report.roles
        ],
        "keys": [key_json(k) for k in report.keys],
        "delegations": [
            {
                **vars(d),
                "keyids": list(d.keyids),
                "paths": list(d.paths) if d.paths is not None else None,
                "path_hash_prefixes": (
                    list(d.path_hash_prefixes) if d.path_hash_prefixes is not None else None
                ),
            }
            for d in report.delegations
        ],
        "delegated_roles": [delegated_role_json(d, report.at) for d in report.delegated_roles],
        "targets": [target_json(t) for t in report.targets],
        "anomalies": [vars(a) for a in report.anomalies],
    }
