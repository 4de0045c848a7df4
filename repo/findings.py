"""Findings: what a security reviewer should act on in an ``InspectReport``.

Each rule has a stable ID, a severity and a one-line fix (docs/FINDINGS.md documents every
one; a test keeps the two equal). A rule is a pure function from the report (and a
``Policy`` of thresholds) to the places where it fires; ``find`` runs them all. A finding is
not a verification failure: the repository may verify and still be set up weakly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations, pairwise
from typing import Any, Generic, Literal, TypeVar

from repo.inspect_history import History
from repo.inspect_report import InspectReport, TargetInfo
from verifier.artifact import ArtifactInfo, ImageVersion

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")

ONLINE_ROLES = ("timestamp", "snapshot")
OFFLINE_ROLES = ("root", "targets")

#: key type -> the signature schemes otakit expects for it
KNOWN_SCHEMES: dict[str, tuple[str, ...]] = {
    "ed25519": ("ed25519",),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "rsa": ("rsassa-pss-sha256", "rsassa-pss-sha384", "rsassa-pss-sha512", "rsa-pkcs1v15-sha256"),
}


def severity_rank(severity: str) -> int:
    return [str(s) for s in SEVERITIES].index(severity)


@dataclass(frozen=True)
class Policy:
    """The thresholds the rules judge by (docs/FINDINGS.md gives the reasons)."""

    root_margin: timedelta = timedelta(days=30)
    targets_margin: timedelta = timedelta(days=14)
    snapshot_margin: timedelta = timedelta(days=1)
    timestamp_margin: timedelta = timedelta(hours=4)
    max_root_versions: int = 10
    min_rsa_bits: int = 3072
    min_ec_bits: int = 256

    def margin(self, role: str) -> timedelta:
        margins = {
            "root": self.root_margin,
            "targets": self.targets_margin,
            "snapshot": self.snapshot_margin,
            "timestamp": self.timestamp_margin,
        }
        return margins[role]


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    title: str
    where: str
    detail: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


#: (where, detail) for each place a rule fires
Hits = Iterator[tuple[str, str]]
#: what a rule judges: one ``InspectReport``, or a ``History`` of versions
Subject = TypeVar("Subject", InspectReport, History)


@dataclass(frozen=True)
class Rule(Generic[Subject]):
    id: str
    severity: Severity
    title: str
    fix: str
    check: Callable[[Subject, Policy], Hits]


# --- roles and keys --------------------------------------------------------------------------


def _root_threshold_one(report: InspectReport, policy: Policy) -> Hits:
    root = report.role("root")
    if root.threshold <= 1:
        yield "root", f"root threshold is {root.threshold} of {len(root.keyids)} key(s)"


def _key_roles(report: InspectReport) -> dict[str, tuple[set[str], list[str]]]:
    """fingerprint -> (roles listing the key under any id, its ids)."""
    by: dict[str, tuple[set[str], list[str]]] = {}
    for k in report.keys:
        roles, ids = by.setdefault(k.fingerprint, (set(), []))
        roles.update(k.roles)
        ids.append(k.keyid)
    return by


def _mixes_online_offline(roles: set[str]) -> bool:
    return bool(roles & set(ONLINE_ROLES)) and bool(roles & set(OFFLINE_ROLES))


def _shared_key(report: InspectReport, policy: Policy) -> Hits:
    for roles, ids in _key_roles(report).values():
        if len(roles) > 1 and not _mixes_online_offline(roles):
            yield f"key {ids[0][:16]}", f"one key signs for {', '.join(sorted(roles))}"


def _online_holds_offline(report: InspectReport, policy: Policy) -> Hits:
    for roles, ids in _key_roles(report).values():
        if _mixes_online_offline(roles):
            online = ", ".join(r for r in ONLINE_ROLES if r in roles)
            offline = ", ".join(r for r in OFFLINE_ROLES if r in roles)
            yield (
                f"key {ids[0][:16]}",
                f"the online {online} key is also a {offline} key: whoever holds the online "
                f"machine can sign {offline}",
            )


def _expiring(report: InspectReport, policy: Policy) -> Hits:
    for r in report.roles:
        if r.expires is None or r.expires <= report.at:
            continue  # not reached, or already expired (a verification failure)
        left = r.expires - report.at
        if left < policy.margin(r.name):
            yield (
                r.name,
                f"{r.name} v{r.version} expires in {_span(left)} "
                f"(margin {_span(policy.margin(r.name))})",
            )


def _span(t: timedelta) -> str:
    if t >= timedelta(days=2):
        return f"{t.days} days"
    return f"{int(t.total_seconds() // 3600)} h {int(t.total_seconds() % 3600 // 60)} min"


def _no_consistent_snapshots(report: InspectReport, policy: Policy) -> Hits:
    if not report.consistent_snapshot:
        yield "root", "consistent_snapshot is off in the newest root"


def _many_roots(report: InspectReport, policy: Policy) -> Hits:
    since = report.newest_root_version - report.pinned_root_version
    if since > policy.max_root_versions:
        yield (
            "root",
            f"{since} root versions since the pinned root v{report.pinned_root_version} "
            f"(more than {policy.max_root_versions})",
        )


def _demo_keys(report: InspectReport, policy: Policy) -> Hits:
    for k in report.keys:
        if k.demo and k.roles:
            yield f"key {k.keyid[:16]}", f"public demo key used by {', '.join(k.roles)}"


def _weak_key(report: InspectReport, policy: Policy) -> Hits:
    for k in report.keys:
        if k.bits is None:
            continue
        floor = policy.min_rsa_bits if k.keytype == "rsa" else policy.min_ec_bits
        if k.bits < floor:
            yield f"key {k.keyid[:16]}", f"{k.keytype} key of {k.bits} bits (fewer than {floor})"


def _unusual_key(report: InspectReport, policy: Policy) -> Hits:
    for k in report.keys:
        if k.scheme not in KNOWN_SCHEMES.get(k.keytype, ()):
            yield f"key {k.keyid[:16]}", f"key type {k.keytype!r} with scheme {k.scheme!r}"


# --- targets ---------------------------------------------------------------------------------


def _artifacts(report: InspectReport) -> list[tuple[TargetInfo, ArtifactInfo]]:
    return [(t, t.artifact) for t in report.targets if t.artifact is not None]


def _fulls(report: InspectReport) -> list[tuple[TargetInfo, ArtifactInfo]]:
    return [(t, a) for t, a in _artifacts(report) if a.kind == "full"]


def _delta_without_full(report: InspectReport, policy: Policy) -> Hits:
    fulls = {(a.product, a.version) for _, a in _fulls(report)}
    for t, a in _artifacts(report):
        if a.kind == "delta" and (a.product, a.version) not in fulls:
            yield t.path, f"no full image of {a.product} {a.version} is published"


def _delta_base_unpublished(report: InspectReport, policy: Policy) -> Hits:
    fulls = {(a.product, a.version, a.image) for _, a in _fulls(report)}
    for t, a in _artifacts(report):
        if a.base is not None and (a.product, a.base.version, a.base.image) not in fulls:
            yield (
                t.path,
                f"its base {a.product} {a.base.version} (sha256 {a.base.image.sha256[:12]}…) "
                "is not a published full image",
            )


def _versions_not_increasing(report: InspectReport, policy: Policy) -> Hits:
    for t, a in _artifacts(report):
        if a.base is not None and a.base.version >= a.version and not a.allow_downgrade:
            yield t.path, f"a delta from {a.base.version} to {a.version} goes back or nowhere"
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for t, a in _fulls(report):
        key = (a.product, str(a.version))
        if key in seen and seen[key][1] != a.image.sha256:
            yield (
                t.path,
                f"{a.product} {a.version} is also published as another image ({seen[key][0]})",
            )
        seen.setdefault(key, (t.path, a.image.sha256))


def _no_artifact(report: InspectReport, policy: Policy) -> Hits:
    for t in report.targets:
        if t.artifact is None and t.artifact_error is None:
            yield t.path, "no otakit artifact metadata in custom: no device will install it"


def _bad_artifact(report: InspectReport, policy: Policy) -> Hits:
    for t in report.targets:
        if t.artifact_error is not None:
            yield t.path, t.artifact_error


def _image_type_changes(report: InspectReport, policy: Policy) -> Hits:
    by_product: dict[str, list[ArtifactInfo]] = {}
    for _, a in _fulls(report):
        if a.image_type is not None:
            by_product.setdefault(a.product, []).append(a)
    for product, arts in sorted(by_product.items()):
        arts.sort(key=lambda a: a.version)
        for older, newer in pairwise(arts):
            if older.image_type != newer.image_type:
                yield (
                    f"{product} {newer.version}",
                    f"image type {older.image_type} in {older.version}, "
                    f"{newer.image_type} in {newer.version}",
                )


def _unsafe_path(report: InspectReport, policy: Policy) -> Hits:
    for t in report.targets:
        if t.path_problem is not None:
            yield repr(t.path), f"the target path has {t.path_problem}"


# --- delegations and files -------------------------------------------------------------------


def _overlap(a: str, b: str) -> bool:
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def _overlapping_delegations(report: InspectReport, policy: Policy) -> Hits:
    for d1, d2 in combinations(report.delegations, 2):
        if d1.delegator != d2.delegator:
            continue
        both = [(p, q) for p in d1.paths or () for q in d2.paths or () if _overlap(p, q)] + [
            (p, q)
            for p in d1.path_hash_prefixes or ()
            for q in d2.path_hash_prefixes or ()
            if p.startswith(q) or q.startswith(p)
        ]
        if both:
            p, q = both[0]
            yield f"{d1.name} / {d2.name}", f"{p!r} and {q!r} can match the same target"


def _duplicate_json_keys(report: InspectReport, policy: Policy) -> Hits:
    for a in report.anomalies:
        if a.kind == "duplicate-key":
            yield a.file, a.detail + " (readers may disagree on what was signed)"


def _unknown_fields(report: InspectReport, policy: Policy) -> Hits:
    for a in report.anomalies:
        if a.kind == "unknown-field":
            yield a.file, f"unknown field {a.detail}"


RULES: tuple[Rule[InspectReport], ...] = (
    Rule("OTA-R001", "high", "root threshold is 1", "add root keys held by different people "
         "and raise the root threshold to 2 or more (otakit repo rotate-root)",
         _root_threshold_one),
    Rule("OTA-R002", "medium", "one key shared between roles", "give each role its own keys "
         "(otakit repo rotate-root)", _shared_key),
    Rule("OTA-R003", "critical", "an online role holds root or targets keys", "rotate: the "
         "timestamp/snapshot keys must be distinct from the offline root and targets keys",
         _online_holds_offline),
    Rule("OTA-R004", "medium", "a role expires within its margin", "re-sign it before it "
         "expires (otakit repo refresh; root and targets need their offline keys)", _expiring),
    Rule("OTA-R005", "medium", "consistent snapshots are off", "publish with consistent "
         "snapshots (a new root with consistent_snapshot true)", _no_consistent_snapshots),
    Rule("OTA-R006", "low", "many root versions since the pinned root", "pin a newer root on "
         "devices and in review pipelines", _many_roots),
    Rule("OTA-K001", "critical", "public demo keys in use", "rotate every demo key out "
         "(otakit repo rotate-root with keys of your own)", _demo_keys),
    Rule("OTA-K002", "high", "weak key", "replace the key with ed25519, ecdsa P-256 or "
         "rsa >= 3072 bits", _weak_key),
    Rule("OTA-K003", "medium", "unusual key type or scheme", "use ed25519, ecdsa-sha2-nistp256 "
         "or rsassa-pss-sha256 keys", _unusual_key),
    Rule("OTA-T001", "medium", "a delta without a full image of its version", "release the "
         "full image of that version too (otakit release)", _delta_without_full),
    Rule("OTA-T002", "medium", "a delta whose base is not a published full image", "build "
         "deltas only from published full images", _delta_base_unpublished),
    Rule("OTA-T003", "high", "image versions do not increase", "give every new image a "
         "higher version; sign allow_downgrade only for a deliberate rollback",
         _versions_not_increasing),
    Rule("OTA-T004", "low", "a target without artifact metadata", "publish images with "
         "otakit release, or remove the target", _no_artifact),
    Rule("OTA-T005", "high", "artifact metadata a device refuses", "re-release the image "
         "with otakit release", _bad_artifact),
    Rule("OTA-T006", "medium", "the image type changes between versions of a product",
         "keep one image type per product, or publish the change as a new product",
         _image_type_changes),
    Rule("OTA-T007", "high", "an unsafe target path", "remove the target; publish only plain "
         "relative paths (product/version/file)", _unsafe_path),
    Rule("OTA-D001", "medium", "overlapping delegation paths", "make delegated path patterns "
         "disjoint (or order them deliberately with terminating roles)",
         _overlapping_delegations),
    Rule("OTA-M001", "high", "duplicate JSON keys in metadata", "re-sign the file with a "
         "TUF writer that emits each key once; find out who wrote it", _duplicate_json_keys),
    Rule("OTA-M002", "low", "unknown fields in metadata", "find out which tool added them; "
         "re-sign without them if they carry no meaning for your clients", _unknown_fields),
)  # fmt: skip


# --- across versions (otakit inspect history) -------------------------------------------------


def _threshold_lowered(history: History, policy: Policy) -> Hits:
    for e in history.roots:
        if e.changes is None:
            continue
        for role in e.changes.roles:
            for c in role.changes:
                lowered = isinstance(c.old, int) and isinstance(c.new, int) and c.new < c.old
                if c.field == "threshold" and lowered:
                    yield (
                        f"root v{e.version}",
                        f"{role.name} threshold lowered from {c.old} to {c.new} "
                        f"(root v{e.changes.old.root_version} -> v{e.version})",
                    )


def _newest_fulls(report: InspectReport) -> dict[str, ImageVersion]:
    newest: dict[str, ImageVersion] = {}
    for _, a in _fulls(report):
        if a.product not in newest or a.version > newest[a.product]:
            newest[a.product] = a.version
    return newest


def _newest_went_back(history: History, policy: Policy) -> Hits:
    for e in history.targets:
        if e.changes is None:
            continue
        before, after = _newest_fulls(e.changes.old), _newest_fulls(e.changes.new)
        was = f"targets v{e.changes.old.role('targets').version}"
        for product, old in sorted(before.items()):
            new = after.get(product)
            if new is None:
                yield (
                    f"targets v{e.version}",
                    f"no full image of {product} is listed any more (newest {old} in {was})",
                )
            elif new < old:
                yield f"targets v{e.version}", f"newest {product} went from {old} ({was}) to {new}"


def _version_republished(history: History, policy: Policy) -> Hits:
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for e in history.targets:
        if e.report is None:
            continue
        for t, a in _fulls(e.report):
            key = (a.product, str(a.version))
            first = seen.setdefault(key, (a.image.sha256, e.version))
            if first[0] != a.image.sha256:
                yield (
                    f"targets v{e.version}",
                    f"{a.product} {a.version} ({t.path}) is another image than the "
                    f"{a.product} {a.version} of targets v{first[1]}",
                )
                seen[key] = (a.image.sha256, e.version)


HISTORY_RULES: tuple[Rule[History], ...] = (
    Rule("OTA-H001", "high", "a root rotation lowered a threshold", "restore the threshold "
         "with a new rotation unless lowering it was decided and recorded", _threshold_lowered),
    Rule("OTA-H002", "medium", "the newest image of a product went back between targets "
         "versions", "confirm the withdrawal was intended (a recall); otherwise find out who "
         "signed that targets version", _newest_went_back),
    Rule("OTA-H003", "high", "an image version re-published with other content", "never "
         "reuse a version: release the new image under a higher version", _version_republished),
)  # fmt: skip

#: Every rule, as docs/FINDINGS.md lists them.
ALL_RULES: tuple[Rule[Any], ...] = (*RULES, *HISTORY_RULES)


def _run(rules: tuple[Rule[Subject], ...], subject: Subject, policy: Policy) -> tuple[Finding, ...]:
    out = [
        Finding(rule.id, rule.severity, rule.title, where, detail, rule.fix)
        for rule in rules
        for where, detail in rule.check(subject, policy)
    ]
    return tuple(sorted(out, key=lambda f: (-severity_rank(f.severity), f.id)))


def find(report: InspectReport, policy: Policy | None = None) -> tuple[Finding, ...]:
    """Every finding of ``report``, most severe first (then by ID)."""
    return _run(RULES, report, policy or Policy())


def find_history(history: History, policy: Policy | None = None) -> tuple[Finding, ...]:
    """Every finding across the versions of ``history`` (``HISTORY_RULES``), most severe
    first. The current state's own findings are ``find(history.current)``."""
    return _run(HISTORY_RULES, history, policy or Policy())


def at_or_above(findings: tuple[Finding, ...], severity: str) -> tuple[Finding, ...]:
    floor = severity_rank(severity)
    return tuple(f for f in findings if severity_rank(f.severity) >= floor)
