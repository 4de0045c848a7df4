"""Multi-party signing of offline-role changes: stage → sign (each holder) → publish.

A change to root or targets is staged once as unsigned metadata (``stage_root``,
``stage_targets``; the file format is ``repo.staged``). Each key holder adds a signature on
their own machine (``sign_change``): signing appends one signature per document the key is
listed for and changes nothing else. ``signing_status`` says, per document and per root
whose threshold applies, who has signed and who is missing. ``approve`` is the only way to
turn a ``StagedChange`` into a ``SignedChange`` — every required threshold met, each key
counted once, no signature that fails to verify or comes from a key nobody lists, no public
key listed under two ids — and ``publish_change`` accepts only a ``SignedChange``
(STYLE.md §6; mypy holds callers to it).

Which roots must approve a document (TUF §5.3.4-5):

* root N+1: a threshold of root N's root keys *and* of its own;
* targets N+1: a threshold of the root that will be current (N+1 if the change carries
  one, else N). When the change also carries root N+1, root N's targets keys may sign as
  well: that is optional, and *bridges* the change (see ``repo.rotate``): targets N+1 then
  verifies under both roots, so root N+1 can be published last and a crash at any write
  leaves a repository every client accepts.

Publication re-signs snapshot and timestamp with the online keys at hand (filtered to the
keys root N or N+1 lists for them), orders the writes with ``repo.rotate``'s logic (bridged:
root last; otherwise root first, resumable with ``resume=True``), and verifies the complete
result from ``1.root.json`` with the device's own verifier before writing a byte. Every
check runs again under the publisher lock, so a change staged or approved before someone
else published is refused as stale instead of overwriting their work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root, Snapshot, Targets  # type: ignore[attr-defined]

from repo.delegation import (
    DelegationSpec,
    delegate_edit,
    product_view,
    published_bins,
    snapshot_meta,
    stage_product_layout,
)
from repo.demo_warnings import DemoKeyWarning, warn_demo_keys
from repo.errors import (
    ExpiryMarginError,
    KeyConfigError,
    LocalError,
    OtakitError,
    RepositoryStateError,
    StagedChangeError,
    StagedSignatureError,
    StaleChangeError,
    ThresholdError,
    UsageError,
)
from repo.keys import (
    KeyConfig,
    KeyRef,
    PromptFn,
    RoleKeys,
    load_available_signers,
    load_signers,
)
from repo.layout import metadata_dir, metadata_filename
from repo.publish import ProgressFn, PublishDisk, SignedRelease, publish, publisher_lock
from repo.repository import Expiries, build_root, check_now, next_targets, stage_chain
from repo.roles import ONLINE_ROLES, TOP_LEVEL_ROLES, RoleSigners
from repo.rotate import (
    RoleChange,
    open_rotation,
    role_changes,
    rotation_release,
    rotation_warnings,
    sign_online_under,
    written_order,
)
from repo.safety import check_root_current
from repo.signing import SignedMetadata, StagedChain, sign_chain, sign_metadata
from repo.staged import MAX_STAGED_BYTES, Base, DelegatedDocument, PublishedRef, StagedChange
from repo.staged import from_bytes as staged_from_bytes
from repo.state import RepoState, load_state
from verifier.effects import Disk, RealDisk, write_atomic
from verifier.errors import MetadataSignatureError
from verifier.tuf.checks import precheck
from verifier.tuf.published import DirectorySource, verify_published

# --- staging -----------------------------------------------------------------------------------


def base_of(state: RepoState) -> Base:
    """What a change made now builds on: the published root and targets files."""
    targets_v = state.targets.signed.version
    targets_file = metadata_dir(state.repo_dir) / metadata_filename("targets", targets_v)
    try:
        targets_bytes = targets_file.read_bytes()
    except OSError as e:
        raise RepositoryStateError(f"cannot read {targets_file}: {e.strerror or e}") from e
    return Base(
        PublishedRef(state.root.signed.version, _sha256(state.root_bytes)),
        PublishedRef(targets_v, _sha256(targets_bytes)),
    )


def stage_root(
    state: RepoState, new_keys: KeyConfig, now: datetime, expiries: Expiries
) -> StagedChange:
    """Root N+1 granting ``new_keys`` (any role's keys and thresholds may change), plus
    targets N+1 (same content, fresh expiry) when the published targets would not meet
    root N+1's targets threshold (its keys or threshold changed)."""
    check_now(now)
    new_root = build_root(new_keys, now, expiries, version=state.root.signed.version + 1)
    docs: list[Metadata[Any]] = [Metadata(new_root)]
    published = state.targets
    if not new_root.get_verification_result(
        "targets", published.signed_bytes, published.signatures
    ).verified:
        docs.append(Metadata(next_targets(state, now, expiries)))
    return StagedChange("root", now, base_of(state), state.root, tuple(docs))


TargetsEdit = Callable[[Targets], Targets]


def stage_targets(
    state: RepoState, edit: TargetsEdit, now: datetime, expiries: Expiries
) -> StagedChange:
    """Targets N+1: the published targets with a fresh expiry, passed through ``edit`` (the
    identity re-signs the offline targets role; a delegation change edits ``delegations``)."""
    check_now(now)
    version = state.targets.signed.version + 1
    edited = edit(next_targets(state, now, expiries))
    if not isinstance(edited, Targets) or edited.version != version:
        found = edited.version if isinstance(edited, Targets) else type(edited).__name__
        raise UsageError(
            f"a targets edit must keep version {version} (the next one), found {found}"
        )
    return StagedChange("targets", now, base_of(state), state.root, (Metadata(edited),))


def stage_delegation(
    state: RepoState, spec: DelegationSpec, now: datetime, expiries: Expiries
) -> StagedChange:
    """A delegation change (``otakit repo delegate --stage``): targets N+1 delegating
    ``spec.product`` to its keys, with the product role and every bin laid out as
    ``repo.delegation.delegate`` would publish them, all unsigned. The targets holders sign
    the targets; the product keys sign the product role and bins (first versions, or N+1 on
    a re-key). Publication adds them to the snapshot."""
    change = stage_targets(state, delegate_edit(spec), now, expiries)
    top = change.documents[0].signed
    layout = stage_product_layout(state, spec, top, expiries.expires("targets", now))
    delegated = tuple(
        DelegatedDocument(r.name, "targets" if i == 0 else spec.product, Metadata(r.targets))
        for i, r in enumerate(layout)
    )
    return dataclasses.replace(change, change="delegation", delegated=delegated)


# --- who must sign -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A delegator whose threshold one document needs (``required``) or may meet (a
    bridge): a root, or for a delegation change's product role the change's targets N+1,
    for a bin the product role (``name``: the delegator's role name)."""

    delegator: Root | Targets
    required: bool
    name: str = "root"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.delegator.version}"

    def keyids(self, role: str) -> list[str]:
        return list(self.delegator.get_delegated_role(role).keyids)

    def threshold(self, role: str) -> int:
        return int(self.delegator.get_delegated_role(role).threshold)

    def key(self, keyid: str) -> Key | None:
        try:
            return self.delegator.get_key(keyid)
        except ValueError:
            return None


@dataclass(frozen=True)
class Approval:
    """One document of a change (its role name) and the delegators that approve it."""

    role: str
    doc: Metadata[Any]
    authorities: list[Authority]

    @property
    def label(self) -> str:
        return f"{self.role} v{self.doc.signed.version}"


def authorities(staged: StagedChange, trusted: Root) -> list[Approval]:
    """Each document with the delegators that approve it (module docstring), ``trusted``
    being root N: the repository's own at publish, the file's copy offline. A delegation
    change's product role is approved by its keys in the change's own targets N+1, each bin
    by the product role's: the targets holders' signatures make those delegations valid."""
    new_root = staged.document("root")
    out: list[Approval] = []
    for doc in staged.documents:
        role = doc.signed.type
        if role == "root":
            auths = [Authority(trusted, True), Authority(doc.signed, True)]
        elif new_root is not None:
            auths = [Authority(new_root.signed, True), Authority(trusted, False)]
        else:
            auths = [Authority(trusted, True)]
        out.append(Approval(role, doc, auths))
    delegators: dict[str, Targets] = {}
    top = staged.document("targets")
    if top is not None:
        delegators["targets"] = top.signed
    for d in staged.delegated:
        parent = delegators[d.delegator]  # checked when the file was read (repo.staged)
        out.append(Approval(d.role, d.metadata, [Authority(parent, True, d.delegator)]))
        delegators[d.role] = d.metadata.signed
    return out


@dataclass(frozen=True)
class AuthorityStatus:
    authority: str
    role: str
    required: bool
    threshold: int
    signed: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def met(self) -> bool:
        return len(self.signed) >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "authority": self.authority,
            "role": self.role,
            "required": self.required,
            "threshold": self.threshold,
            "signed": list(self.signed),
            "missing": list(self.missing),
            "met": self.met,
        }


@dataclass(frozen=True)
class DocumentStatus:
    role: str
    version: int
    authorities: tuple[AuthorityStatus, ...]
    #: listed keys whose signature does not verify (forged, or over other bytes)
    invalid: tuple[str, ...]
    #: signatures from keys no authority of this document lists
    foreign: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return (
            all(a.met for a in self.authorities if a.required)
            and not self.invalid
            and not self.foreign
        )

    @property
    def bridged(self) -> bool:
        return all(a.met for a in self.authorities)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "version": self.version,
            "authorities": [a.to_json() for a in self.authorities],
            "invalid": list(self.invalid),
            "foreign": list(self.foreign),
            "complete": self.complete,
        }


@dataclass(frozen=True)
class SigningStatus:
    change: str
    base: Base
    documents: tuple[DocumentStatus, ...]
    #: reasons no signature can make this change publishable (one key under two ids ...)
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.problems and all(d.complete for d in self.documents)

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "base": self.base.to_json(),
            "documents": [d.to_json() for d in self.documents],
            "problems": list(self.problems),
            "ready": self.ready,
        }


def signing_status(staged: StagedChange, trusted: Root | None = None) -> SigningStatus:
    """Who has signed each document and who is missing, per authority. ``trusted`` is the
    published root N (default: the file's copy, which only ``publish`` checks)."""
    trusted = trusted or staged.trusted_root.signed
    problems: list[str] = []
    docs = []
    for i, ap in enumerate(authorities(staged, trusted)):
        problem = _duplicate_keys(ap.doc, f"documents[{i}] ({ap.role})")
        if problem:
            problems.append(problem)
        docs.append(_document_status(ap.role, ap.doc, ap.authorities))
    return SigningStatus(staged.change, staged.base, tuple(docs), tuple(problems))


def _document_status(role: str, doc: Metadata[Any], auths: list[Authority]) -> DocumentStatus:
    valid: set[str] = set()
    invalid: list[str] = []
    foreign: list[str] = []
    for keyid, sig in sorted(doc.signatures.items()):
        key = _listed_key(keyid, role, auths)
        if key is None:
            foreign.append(keyid)
        elif _verifies(key, sig, doc):
            valid.add(keyid)
        else:
            invalid.append(keyid)
    statuses = []
    for a in auths:
        listed = a.keyids(role)
        statuses.append(
            AuthorityStatus(
                a.label,
                role,
                a.required,
                a.threshold(role),
                tuple(k for k in listed if k in valid),
                tuple(k for k in listed if k not in valid),
            )
        )
    return DocumentStatus(role, doc.signed.version, tuple(statuses), tuple(invalid), tuple(foreign))


def _listed_key(keyid: str, role: str, auths: list[Authority]) -> Key | None:
    for a in auths:
        if keyid in a.keyids(role) and (key := a.key(keyid)) is not None:
            return key
    return None


def _verifies(key: Key, sig: Signature, doc: Metadata[Any]) -> bool:
    try:
        key.verify_signature(sig, doc.signed_bytes)
    except UnverifiedSignatureError:
        return False
    return True


def _duplicate_keys(doc: Metadata[Any], name: str) -> str | None:
    """The device's own byte-level refusal (``precheck``): one public key under two ids, one
    signature listed twice."""
    try:
        precheck(_doc_bytes(doc), name, error=StagedSignatureError)
    except StagedSignatureError as e:
        return e.message
    return None


def _doc_bytes(doc: Metadata[Any]) -> bytes:
    return json.dumps(doc.to_dict(), sort_keys=True).encode()


# --- signing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignOutcome:
    keyid: str
    signed: tuple[str, ...]  # "root v2", "targets v3": newly signed
    already: tuple[str, ...]  # already carried this key's valid signature

    def to_json(self) -> dict[str, Any]:
        return {"keyid": self.keyid, "signed": list(self.signed), "already": list(self.already)}


def sign_change(staged: StagedChange, signer: Signer) -> tuple[StagedChange, SignOutcome]:
    """Add ``signer``'s signature to every document some authority lists its key for.

    Idempotent (a document this key already validly signed is left alone); refuses a key
    listed for no document. Only signatures are added: ``signed`` is never touched.
    """
    keyid = signer.public_key.keyid
    trusted = staged.trusted_root.signed
    signed: list[str] = []
    already: list[str] = []
    out = staged
    for i, ap in enumerate(authorities(staged, trusted)):
        doc, label = ap.doc, ap.label
        key = _listed_key(keyid, ap.role, ap.authorities)
        if key is None:
            continue
        existing = doc.signatures.get(keyid)
        if existing is not None and _verifies(key, existing, doc):
            already.append(label)
            continue
        sig = _sign(signer, doc, label)
        if not _verifies(key, sig, doc):
            raise KeyConfigError(
                f"{label}: the signature made with key {keyid[:12]} does not verify under its "
                "public key",
                hint="the signing backend holds another key than the one root lists",
            )
        out = out.with_signature(i, sig)
        signed.append(label)
    if not signed and not already:
        raise StagedChangeError(
            f"key {keyid[:12]} is listed for none of the documents of this {staged.change} "
            f"change ({_listing(staged)})",
            hint="sign with a key of one of the roles named (see 'otakit repo sign-status')",
        )
    return out, SignOutcome(keyid, tuple(signed), tuple(already))


def _sign(signer: Signer, doc: Metadata[Any], label: str) -> Signature:
    try:
        return signer.sign(doc.signed_bytes)
    except OtakitError:
        raise
    except Exception as e:  # any signer backend failure (HSM, KMS, file)
        if isinstance(e.__cause__, OtakitError):
            raise e.__cause__ from None
        raise KeyConfigError(f"{label}: signing failed: {type(e).__name__}: {e}") from e


def _listing(staged: StagedChange) -> str:
    parts = []
    for ap in authorities(staged, staged.trusted_root.signed):
        for a in ap.authorities:
            ids = ", ".join(k[:12] for k in a.keyids(ap.role))
            parts.append(f"{ap.label}: {a.label} {ap.role} keys [{ids}]")
    return "; ".join(parts)


def candidate_keys(staged: StagedChange) -> dict[str, Key]:
    """Every public key some authority lists for some document (what ``--key`` may be)."""
    out: dict[str, Key] = {}
    for ap in authorities(staged, staged.trusted_root.signed):
        for a in ap.authorities:
            for keyid in a.keyids(ap.role):
                if (key := a.key(keyid)) is not None:
                    out.setdefault(keyid, key)
    return out


def load_key_signer(
    staged: StagedChange,
    uri: str,
    *,
    secret_env: str | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> Signer:
    """The signer behind ``uri``, matched to the public key it is the private half of.

    ``uri`` names only the private key, so each key the change lists is tried through the
    one key loader (``repo.keys``): a PEM key (``file2:``, ``envvar:``) that is another
    key's half is refused there; any other backend (``hsm:``, KMS) must produce a
    signature that verifies under the candidate. A secret is asked for once.
    """
    asked: dict[str, str] = {}

    def once(text: str) -> str:
        if "secret" not in asked:
            assert prompt is not None
            asked["secret"] = prompt(text)
        return asked["secret"]

    pem = uri.split(":", 1)[0] in ("file2", "envvar")
    mismatch: str | None = None
    for keyid, key in sorted(candidate_keys(staged).items()):
        ref = KeyRef(public=key, uri=uri, secret_env=secret_env)
        conf = KeyConfig(Path("--key"), {"key": RoleKeys(1, (ref,))})
        try:
            (signer,) = load_signers(conf, "key", env=env, prompt=once if prompt else None)
        except KeyConfigError as e:  # another key's half, or a backend refusing this key type
            mismatch = e.message
            continue
        try:
            if pem or _probe(signer, key, staged):
                return signer
        except KeyConfigError as e:
            mismatch = e.message
            continue
        mismatch = f"{uri}: the key there does not sign as {keyid[:12]}"
    raise StagedChangeError(
        f"the key at {uri.split('?', 1)[0]} is listed for none of the documents of this "
        f"{staged.change} change ({_listing(staged)})"
        + (f"; {_holds(mismatch)}" if mismatch else ""),
        hint="sign with a key of one of the roles named (see 'otakit repo sign-status')",
    )


def _holds(mismatch: str) -> str:
    found = re.search(r"found the private half of (key [0-9a-f]+)", mismatch)
    return f"it holds {found.group(1)}" if found else mismatch


def _probe(signer: Signer, key: Key, staged: StagedChange) -> bool:
    """Whether a backend key is ``key``: sign the first document ``key`` may sign anyway."""
    for ap in authorities(staged, staged.trusted_root.signed):
        if _listed_key(key.keyid, ap.role, ap.authorities) is not None:
            return _verifies(key, _sign(signer, ap.doc, ap.role), ap.doc)
    return False


# --- approving and publishing ------------------------------------------------------------------


@dataclass(frozen=True)
class SignedChange:
    """A staged change whose every required threshold is met. Only ``approve`` makes one."""

    change: str
    base: Base
    old_root: Root
    root: SignedMetadata | None
    new_root: Root | None
    targets: SignedMetadata | None
    #: a delegation change: the product role, then its bins (signed to threshold)
    delegated: tuple[SignedMetadata, ...] = ()
    bins: frozenset[str] = frozenset()


def check_base(base: Base, state: RepoState, *, finishing: SignedMetadata | None = None) -> None:
    """Refuse a change staged against anything but the published root and targets.

    ``finishing``: the targets of a bridged root change, which may already be published
    under root N by an interrupted run (root N+1 is written last); rerunning finishes it.
    """
    now = base_of(state)
    if now == base:
        return
    if (
        finishing is not None
        and now.root == base.root
        and now.targets == PublishedRef(finishing.version, finishing.sha256)
    ):
        return
    if base.root != now.root:
        found = f"root v{now.root.version} (sha256 {now.root.sha256[:12]})"
        wanted = f"root v{base.root.version} (sha256 {base.root.sha256[:12]})"
    else:
        found = f"targets v{now.targets.version} (sha256 {now.targets.sha256[:12]})"
        wanted = f"targets v{base.targets.version} (sha256 {base.targets.sha256[:12]})"
    raise StaleChangeError(
        f"the change was staged against {wanted}, but the repository now publishes {found}",
        hint="stage the change again against the published state (otakit repo stage) and "
        "collect the signatures again; signatures over the old change cannot be reused",
    )


def approve(staged: StagedChange, state: RepoState, *, resuming: bool = False) -> SignedChange:
    """A ``SignedChange``, or the reason it is not one yet (against the published ``state``).

    ``resuming``: ``state`` was loaded with the online chain under the previous root (a
    root-first publication of this change was interrupted); that previous root is root N.
    """
    if resuming:
        trusted_md, trusted_bytes = _previous_root(state)
        base_state = replace_root(state, trusted_md, trusted_bytes)
    else:
        base_state = state
    trusted = base_state.root.signed
    if base_of(base_state).root != staged.base.root:
        check_base(staged.base, base_state)  # refused: the root moved
    status = signing_status(staged, trusted)
    if status.problems:
        raise StagedSignatureError(
            "; ".join(status.problems),
            hint="no honest key configuration lists one key twice; stage the change again "
            "from a key configuration (otakit repo stage)",
        )
    for d in status.documents:
        bad = [("do not verify", d.invalid), ("come from keys not listed for it", d.foreign)]
        for what, keyids in bad:
            if keyids:
                raise StagedSignatureError(
                    f"{d.role} v{d.version}: signatures of {[k[:12] for k in keyids]} {what}",
                    hint="the staged file was altered after signing; start from a trusted copy",
                )
        for a in d.authorities:
            if a.required and not a.met:
                raise ThresholdError(
                    f"{d.role} v{d.version}: expected {a.threshold} signature(s) from "
                    f"{a.authority}'s {a.role} keys, found {len(a.signed)} "
                    f"(missing: {[k[:12] for k in a.missing]})",
                    hint="have more holders run 'otakit repo sign STAGED --key URI' "
                    "(see 'otakit repo sign-status STAGED')",
                )
    signed: dict[str, SignedMetadata] = {}
    bins = {d.role for d in staged.delegated[1:]}
    for ap in authorities(staged, trusted):
        copy: Metadata[Any] = Metadata.from_dict(ap.doc.to_dict())
        required = [a.delegator for a in ap.authorities if a.required]
        signed[ap.role] = sign_metadata(
            copy,
            [],
            required,
            role=ap.role,
            compact=ap.role in bins,
            keep_signatures=True,
        )
    new_root = staged.document("root")
    check_base(staged.base, base_state, finishing=signed.get("targets") if new_root else None)
    return SignedChange(
        staged.change,
        staged.base,
        trusted,
        signed.get("root"),
        None if new_root is None else new_root.signed,
        signed.get("targets"),
        tuple(signed[d.role] for d in staged.delegated),
        frozenset(bins),
    )


@dataclass(frozen=True)
class CeremonyResult:
    """What a published change wrote, in the order it was written."""

    change: str
    versions: Mapping[str, int]
    written: tuple[str, ...]
    bridged: bool
    changes: tuple[RoleChange, ...]
    warnings: tuple[str, ...]
    demo_keys: tuple[DemoKeyWarning, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "versions": dict(self.versions),
            "written": list(self.written),
            "bridged": self.bridged,
            "roles": {c.role: c.to_json() for c in self.changes if c.changed},
            "warnings": list(self.warnings),
        }


def publish_change(
    repo_dir: Path,
    change: SignedChange,
    online_signers: RoleSigners,
    now: datetime,
    *,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> CeremonyResult:
    """Publish ``change`` with snapshot and timestamp re-signed by ``online_signers``."""
    check_now(now)
    expiries = expiries or Expiries()
    if change.delegated:
        if resume:
            raise UsageError("--resume applies to a root change only")
        return _publish_delegation(repo_dir, change, online_signers, now, expiries, disk, progress)
    with publisher_lock(repo_dir):
        if change.root is not None:
            state, resuming = open_rotation(
                repo_dir, resume=resume, rerun="'otakit repo publish STAGED REPO'"
            )
        elif resume:
            raise UsageError("--resume applies to a root change only")
        else:
            state, resuming = load_state(repo_dir), False
        if resuming:
            _check_resumable(change, state)
            check_base(change.base, replace_root(state, *_previous_root(state)))
        else:
            check_base(change.base, state, finishing=change.targets if change.root else None)
        authority = change.new_root or state.root.signed
        old_root = change.old_root if change.root is not None and not resuming else None
        signers = _listed_signers(online_signers, [authority, change.old_root])
        chain = sign_online_under(
            state, authority, old_root, signers, now, expiries, change.targets
        )
        release = rotation_release(chain, None if resuming else change.root)
        _verify_result(repo_dir, release)
        publish(repo_dir, release, disk=disk or PublishDisk(), progress=progress)
        after = load_state(repo_dir)
    unbridged = chain.unbridged if change.root is not None else ()
    return CeremonyResult(
        change=change.change,
        versions={r: getattr(after, r).signed.version for r in TOP_LEVEL_ROLES},
        written=written_order(release),
        bridged=not unbridged,
        changes=role_changes(change.old_root, after.root.signed) if change.root else (),
        warnings=rotation_warnings(
            resuming=resuming,
            unbridged=unbridged,
            old_version=change.old_root.version,
            new_version=after.root.signed.version,
        )
        if change.root
        else (),
        demo_keys=warn_demo_keys(root=after.root.signed, repo=repo_dir, signers=[signers]),
    )


def check_delegated(roles: Mapping[str, int], state: RepoState) -> None:
    """Refuse a delegation change whose product role or bins are not the next versions of
    the published ones (a release of the product since staging moved them on)."""
    for role, version in roles.items():
        meta = state.snapshot.signed.meta.get(f"{role}.json")
        wanted = (meta.version if meta is not None else 0) + 1
        if version != wanted:
            raise StaleChangeError(
                f"{role}: the change holds v{version}, but the repository publishes "
                f"v{wanted - 1} (the product changed since staging)",
                hint="stage the change again against the published state (otakit repo "
                "delegate --stage) and collect the signatures again",
            )


def _publish_delegation(
    repo_dir: Path,
    change: SignedChange,
    online_signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
    disk: Disk | None,
    progress: ProgressFn | None,
) -> CeremonyResult:
    """Targets N+1, the product role and its bins, snapshot and timestamp: the order and
    snapshot entries of ``repo.delegation.delegate``, with the ceremony's signatures."""
    assert change.targets is not None
    with publisher_lock(repo_dir):
        state = load_state(repo_dir)
        check_base(change.base, state)
        check_delegated({md.role: md.version for md in change.delegated}, state)
        check_root_current(state.root.signed, now)
        _check_lifetimes((change.targets, *change.delegated), now, expiries)
        staged = stage_chain(state, None, now, expiries)
        meta = {**staged.snapshot.meta, "targets.json": change.targets.meta_file()}
        for name in published_bins(state, change.delegated[0].role) - change.bins:
            meta.pop(f"{name}.json", None)  # a new bin count: the old bins are not delegated
        meta.update(snapshot_meta(change.delegated, change.bins))
        snapshot = Snapshot(
            version=staged.snapshot.version, expires=staged.snapshot.expires, meta=meta
        )
        signers = _listed_signers(online_signers, [state.root.signed])
        chain = sign_chain(
            StagedChain(None, snapshot, staged.timestamp), signers, [state.root.signed]
        )
        release = SignedRelease(
            (), change.targets, chain.snapshot, chain.timestamp, delegated=change.delegated
        )
        _verify_result(repo_dir, release)
        publish(repo_dir, release, disk=disk or PublishDisk(), progress=progress)
        after = load_state(repo_dir)
        product_view(after, change.delegated[0].role)  # re-read: verifies role and bins
    return CeremonyResult(
        change=change.change,
        versions={r: getattr(after, r).signed.version for r in TOP_LEVEL_ROLES},
        written=written_order(release),
        bridged=True,
        changes=(),
        warnings=(),
        demo_keys=warn_demo_keys(root=after.root.signed, repo=repo_dir, signers=[signers]),
    )


def _check_lifetimes(signed: tuple[SignedMetadata, ...], now: datetime, expiries: Expiries) -> None:
    """Refuse to publish what was signed to expire within the targets margin of ``now``
    (a change that waited too long for its signatures: devices would soon refuse it)."""
    margin = expiries.margins.targets
    for md in signed:
        expires = Metadata.from_bytes(md.data).signed.expires
        if expires <= now + margin:
            raise ExpiryMarginError(
                f"{md.role} v{md.version}: expected to stay valid for more than {margin} after "
                f"publication, found it expires at {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                hint="stage the change again (a fresh expiry) and collect the signatures again",
            )


def _previous_root(state: RepoState) -> tuple[Metadata[Root], bytes]:
    path = metadata_dir(state.repo_dir) / metadata_filename("root", state.online_root_version)
    data = path.read_bytes()
    return Metadata.from_bytes(data), data


def replace_root(state: RepoState, root: Metadata[Root], root_bytes: bytes) -> RepoState:
    return dataclasses.replace(state, root=root, root_bytes=root_bytes)


def _check_resumable(change: SignedChange, state: RepoState) -> None:
    """Resuming finishes *this* change: root N+1 published is its root, over its base."""
    assert change.root is not None
    if _sha256(state.root_bytes) != change.root.sha256:
        raise StaleChangeError(
            f"the published root v{state.root.signed.version} is not the root of this change",
            hint="resume with the staged file of the interrupted publication",
        )


def _listed_signers(signers: RoleSigners, roots: list[Root]) -> dict[str, list[Signer]]:
    """The online signers some root lists for their role (a key configuration may hold more)."""
    out: dict[str, list[Signer]] = {}
    for role in ONLINE_ROLES:
        listed = {k for r in roots for k in r.roles[role].keyids}
        out[role] = [s for s in signers.get(role, ()) if s.public_key.keyid in listed]
    return out


class _Overlay:
    """The repository's metadata as it will be after ``release`` (a ``MetadataSource``)."""

    def __init__(self, disk: DirectorySource, new: Mapping[str, bytes]) -> None:
        self._disk, self._new = disk, new

    def get(self, name: str, /) -> bytes | None:
        return self._new[name] if name in self._new else self._disk.get(name)


def _verify_result(repo_dir: Path, release: SignedRelease) -> None:
    """The whole result verified from 1.root.json by the device's verifier before any write."""
    new = {
        md.filename: md.data
        for md in (release.root, release.targets, *release.delegated, release.snapshot)
        if md is not None
    }
    new["timestamp.json"] = release.timestamp.data
    source = DirectorySource(metadata_dir(repo_dir))
    try:
        first = source.get(metadata_filename("root", 1)) or b""
        verify_published(_Overlay(source, new), first)
    except MetadataSignatureError as e:
        raise ThresholdError(f"the result would not verify: {e.message}") from e
    except OtakitError as e:
        raise RepositoryStateError(f"the result would not verify: {e.message}") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the file edge (what the commands call) ----------------------------------------------------


def read_staged(path: Path) -> StagedChange:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_STAGED_BYTES + 1)
    except OSError as e:
        raise LocalError(
            f"cannot read the staged change {path}: {e.strerror or e}",
            hint="pass the file written by 'otakit repo stage'",
        ) from e
    return staged_from_bytes(data, str(path))


def write_staged(path: Path, staged: StagedChange, *, new: bool) -> None:
    """Atomically (a holder's machine may crash mid-write: the file keeps the old signatures)."""
    if new and path.exists():
        raise UsageError(
            f"{path}: already exists; a staged file may hold collected signatures",
            hint="choose another --out, or remove the old file if it is abandoned",
        )
    try:
        write_atomic(RealDisk(), path, staged.to_bytes())
    except OSError as e:
        raise LocalError(f"cannot write {path}: {e.strerror or e}") from e


def stage_file(
    repo_dir: Path,
    role: str,
    out: Path,
    now: datetime,
    *,
    keys: KeyConfig | None = None,
    expiries: Expiries | None = None,
) -> StagedChange:
    """``otakit repo stage``: stage root (from ``keys``) or targets and write ``out``."""
    expiries = expiries or Expiries()
    state = load_state(repo_dir)
    if role == "root":
        if keys is None:
            raise UsageError("staging root needs --keys: the key configuration root N+1 grants")
        staged = stage_root(state, keys, now, expiries)
    elif role == "targets":
        if keys is not None:
            raise UsageError(
                "staging targets re-signs the published targets; --keys applies to root",
                hint="to change the targets keys, stage root with a new key configuration",
            )
        staged = stage_targets(state, lambda t: t, now, expiries)
    else:
        raise UsageError(f"expected root or targets to stage, found {role!r}")
    write_staged(out, staged, new=True)
    warn_demo_keys(root=staged.documents[0].signed if role == "root" else state.root.signed)
    return staged


def stage_delegation_file(
    repo_dir: Path,
    spec: DelegationSpec,
    out: Path,
    now: datetime,
    *,
    expiries: Expiries | None = None,
) -> StagedChange:
    """``otakit repo delegate --stage --out FILE``: stage the delegation and write ``out``."""
    state = load_state(repo_dir)
    staged = stage_delegation(state, spec, now, expiries or Expiries())
    write_staged(out, staged, new=True)
    warn_demo_keys(root=state.root.signed)
    return staged


def sign_file(
    path: Path,
    uri: str,
    *,
    secret_env: str | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> SignOutcome:
    """``otakit repo sign``: add the signatures of the key at ``uri`` to the file, in place."""
    staged = read_staged(path)
    signer = load_key_signer(staged, uri, secret_env=secret_env, env=env, prompt=prompt)
    signed, outcome = sign_change(staged, signer)
    newest = staged.document("root") or staged.trusted_root
    warn_demo_keys(root=newest.signed)
    if outcome.signed:
        write_staged(path, signed, new=False)
    return outcome


def status_file(path: Path, repo_dir: Path | None = None) -> SigningStatus:
    """``otakit repo sign-status``: against the file's root N, or the repository's (which
    also shows a stale change as a problem)."""
    staged = read_staged(path)
    if repo_dir is None:
        return signing_status(staged)
    state = load_state(repo_dir)
    status = signing_status(staged, state.root.signed)
    try:
        check_base(staged.base, state)
        check_delegated({d.role: d.metadata.signed.version for d in staged.delegated}, state)
    except StaleChangeError as e:
        return dataclasses.replace(status, problems=(*status.problems, e.message))
    return status


def publish_file(
    path: Path,
    repo_dir: Path,
    keyconfs: list[KeyConfig],
    now: datetime,
    *,
    expiries: Expiries | None = None,
    prompt: PromptFn | None = None,
    resume: bool = False,
    disk: Disk | None = None,
) -> CeremonyResult:
    """``otakit repo publish``: approve the staged file and publish it, online keys loaded
    from ``keyconfs`` (every loadable snapshot and timestamp key of each)."""
    staged = read_staged(path)
    if resume:
        state = load_state(repo_dir, online_under_previous_root=True)
    else:
        state = load_state(repo_dir)
    change = approve(staged, state, resuming=resume)
    signers: dict[str, list[Signer]] = {role: [] for role in ONLINE_ROLES}
    for conf in keyconfs:
        for role in ONLINE_ROLES:
            loaded, _problems = load_available_signers(conf, role, prompt=prompt)
            signers[role].extend(loaded)
    return publish_change(
        repo_dir, change, signers, now, expiries=expiries, disk=disk, resume=resume
    )
