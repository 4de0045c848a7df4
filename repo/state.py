"""Read the currently published repository, following timestamp → snapshot → targets.

The publisher reads its own output with the device's own checks: ``load_state`` only reads
the bytes (bounded) from ``REPO/metadata`` and hands them to
``verifier.tuf.published.verify_published``, which walks the root chain from 1.root.json with
the same walk as the device, checks that the pieces agree (versions, lengths, hashes) and that
every role's signatures verify against the root. Its errors become the publisher's here: a
signature problem is ``UntrustedRepositoryError``, anything missing, unparsable or
inconsistent is ``RepositoryStateError``. A release re-signs everything the current targets
list, so it must never build on files someone edited on the server: that would turn write
access to the repository directory into a signature from the targets key.
Expiry is deliberately not checked: re-signing expired metadata is how a publisher recovers.
A crash mid-publish leaves orphan files that this reader simply does not reach. A root
history with a hole (``2.root.json`` deleted while ``3.root.json`` or the ``root.json`` copy of
root v2 is present) is ``RootHistoryGapError``: the walk would stop at the hole and the
publisher would sign on under an older root.

One crash needs more: a root rotation that had to publish root N+1 *before* the online
metadata (its old online keys were lost, see ``repo.rotate``) and died in between leaves
timestamp/snapshot/targets that verify only under root N. ``load_state`` refuses that like
any other mismatch; ``load_state(..., online_under_previous_root=True)`` (used only by the
rotation's resume) verifies the online chain against root N instead, still reached through
the verified root chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp  # type: ignore[attr-defined]

from repo.errors import RepositoryStateError, RootHistoryGapError, UntrustedRepositoryError
from repo.layout import metadata_dir, metadata_filename
from verifier.errors import MetadataSignatureError, OtakitError, RootGapError
from verifier.tuf.published import DirectorySource, verify_published

_MAX_METADATA = 64 << 20


@dataclass(frozen=True)
class RepoState:
    """The published top-level metadata, parsed, plus the trusted root's raw bytes."""

    repo_dir: Path
    root: Metadata[Root]
    root_bytes: bytes = field(repr=False)
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    #: the root version the online metadata verified under (``root``'s unless resuming)
    online_root_version: int = 0


_UNTRUSTED_HINT = (
    "the repository directory was modified outside otakit; restore it from a "
    "trusted copy before releasing (a release would re-sign what it lists)"
)
_RESUME_HINT = (
    "; or, if an 'otakit repo rotate-root' was interrupted, rerun it with the same "
    "key configurations and --resume"
)


def load_state(repo_dir: Path, *, online_under_previous_root: bool = False) -> RepoState:
    """The published state, every signature verified (see the module docstring)."""
    mdir = metadata_dir(repo_dir)
    first = mdir / metadata_filename("root", 1)
    if not first.is_file():
        raise RepositoryStateError(
            f"{repo_dir}: expected an otakit repository ({first}), found none",
            hint="create one with: otakit repo init REPO --keys KEYCONF",
        )
    source = DirectorySource(mdir, _MAX_METADATA)
    try:
        root_bytes = source.get(first.name) or b""
        published = verify_published(
            source, root_bytes, online_under_previous_root=online_under_previous_root
        )
    except RootGapError as e:
        raise RootHistoryGapError(e.message, hint=e.hint) from e
    except MetadataSignatureError as e:
        hint = _UNTRUSTED_HINT + (_RESUME_HINT if e.role != "root" else "")
        raise UntrustedRepositoryError(e.message, hint=hint) from e
    except OtakitError as e:
        raise RepositoryStateError(e.message, hint=e.hint) from e
    return RepoState(
        repo_dir,
        published.root,
        published.root_bytes,
        published.targets,
        published.snapshot,
        published.timestamp,
        published.online_root_version,
    )
