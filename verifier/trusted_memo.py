"""What the trusted metadata lists, remembered for ``status`` next to the bytes it came from.

``status`` is what a fleet's monitoring runs every minute and what an operator runs when
something is wrong; checking the stored metadata from the pinned root each time costs it
python-tuf, securesystemslib and cryptography (three quarters of its start time and most
of its memory, bench/RESULTS.md "Device footprint"). The answer is a pure function of the
pinned root and the files under ``STATE/metadata``, so it is kept in
``STATE/trusted-candidates.json`` under the sha256 of every one of those files: any change
to any of them (a refresh, damage, a restore) misses, and ``status`` verifies again.

It is for display only. ``update``, ``verify-installed`` and ``fetch`` never read it: they
verify what they rely on. A forged memo needs write access to the state directory, where
the journal and the boot state that ``status`` also shows live.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier import strictjson
from verifier.artifact import ArtifactInfo
from verifier.effects import Disk, write_atomic
from verifier.errors import ArtifactSchemaError, LocalError, OtakitError, SecurityError
from verifier.plan import Candidate
from verifier.state import StatePaths

log = logging.getLogger(__name__)

SCHEMA = 1
#: metadata larger than this in total is not hashed for a memo (status verifies instead)
MAX_INPUT_BYTES = 64 << 20

#: the answer of a full check: the candidates, or why the trusted metadata cannot be read
Answer = list[Candidate] | str


def memo_path(paths: StatePaths) -> Path:
    return paths.root / "trusted-candidates.json"


def inputs_digest(paths: StatePaths) -> str | None:
    """sha256 over the name and bytes of the pinned root and every file under
    ``STATE/metadata`` (sorted); None when they cannot all be read, or are too large."""
    files = [("root.json", paths.pinned_root)]
    try:
        for dirpath, dirnames, filenames in os.walk(paths.metadata, onerror=_raise):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                files.append((full.relative_to(paths.root).as_posix(), full))
        h = hashlib.sha256()
        total = 0
        for rel, full in files:
            data = full.read_bytes()
            total += len(data)
            if total > MAX_INPUT_BYTES:
                return None
            h.update(b"%d:%s\0%d:" % (len(rel), rel.encode(), len(data)))
            h.update(data)
    except OSError:
        return None
    return h.hexdigest()


def _raise(e: OSError) -> None:
    raise e


def recall(paths: StatePaths, product: str, digest: str | None) -> Answer | None:
    """The remembered answer for the files whose ``inputs_digest`` is ``digest``, or None
    (then verify)."""
    if digest is None:
        return None
    try:
        data = memo_path(paths).read_bytes()
    except OSError:
        return None
    try:
        doc = strictjson.loads(data, name=str(memo_path(paths)), error=LocalError)
        if (
            not isinstance(doc, dict)
            or doc.get("schema") != SCHEMA
            or doc.get("inputs") != digest
            or doc.get("product") != product
        ):
            return None
        if isinstance(problem := doc.get("problem"), str):
            return problem
        return [_candidate(c) for c in doc["candidates"]]
    except (OtakitError, KeyError, TypeError, ValueError) as e:
        log.debug("ignoring %s: %s", memo_path(paths), e)
        return None


def remember(
    paths: StatePaths,
    disk: Disk,
    product: str,
    verify: Callable[[], Answer],
    before: str | None,
) -> Answer:
    """``verify()``'s answer, kept for ``recall`` if the files still have the digest
    ``before`` (taken before it ran) afterwards.

    Writing is best effort (a read-only state directory still gets its status).
    """
    answer = verify()
    if before is not None and inputs_digest(paths) == before:
        doc: dict[str, Any] = {"schema": SCHEMA, "product": product, "inputs": before}
        if isinstance(answer, str):
            doc["problem"] = answer
        else:
            doc["candidates"] = [_to_dict(c) for c in answer]
        try:
            write_atomic(disk, memo_path(paths), json.dumps(doc).encode())
        except OtakitError as e:
            log.debug("not remembering the trusted candidates: %s", e.message)
    return answer


def trusted_answer(paths: StatePaths, disk: Disk, product: str) -> Answer:
    """What ``status`` shows of the trusted metadata: remembered, or checked and remembered."""
    digest = inputs_digest(paths)
    known = recall(paths, product, digest)
    if known is not None:
        return known

    def verify() -> Answer:
        from verifier.tuf.client import trusted_candidates  # python-tuf only on a miss

        try:
            return trusted_candidates(paths, product)
        except (SecurityError, LocalError) as e:
            return e.message

    return remember(paths, disk, product, verify, digest)


def _to_dict(c: Candidate) -> dict[str, Any]:
    return {
        "path": c.path,
        "length": c.length,
        "hashes": dict(c.hashes),
        "custom": c.info.to_custom(),
    }


def _candidate(d: Any) -> Candidate:
    """Parsed with the same schema reader a refresh uses (``ArtifactInfo.from_custom``)."""
    if not isinstance(d, dict) or not isinstance(d["path"], str):
        raise ArtifactSchemaError(f"expected a candidate object, found {d!r:.80}")
    length, hashes = d["length"], d["hashes"]
    if not isinstance(length, int) or not isinstance(hashes, dict):
        raise ArtifactSchemaError("candidate: length and hashes expected")
    info = ArtifactInfo.from_custom(d["custom"])
    return Candidate(d["path"], length, tuple(hashes.items()), info)
