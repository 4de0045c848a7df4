"""python-tuf, transport and OS exceptions mapped into the device's error hierarchy.

The library's exception class names mean nothing to a user, so messages keep the library's
text (which names the file and the numbers) under our context, never ``ClassName: ...``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator

from tuf.api import exceptions as tuf_exc
from tuf.api.serialization import DeserializationError

from verifier.errors import (
    InvalidMetadataError,
    MediumError,
    MetadataError,
    MetadataRollbackError,
    OtakitError,
    StorageError,
    TargetVerificationError,
    TransportError,
    UnsafeMirrorError,
)
from verifier.tuf.fetcher import CannotConnectError
from verifier.tuf.localfetch import MediumReadError, UnsafeMirrorPathError

# Used when a library exception carries no text of its own.
_PLAIN = {
    tuf_exc.UnsignedMetadataError: "not signed by the threshold of authorized keys",
    tuf_exc.ExpiredMetadataError: "metadata expired",
    tuf_exc.BadVersionNumberError: "unexpected metadata version",
    tuf_exc.EqualVersionNumberError: "same version with different content",
    tuf_exc.LengthOrHashMismatchError: "length or hash differs from the signed one",
    tuf_exc.DownloadLengthMismatchError: "longer than allowed",
    tuf_exc.SlowRetrievalError: "timed out",
    tuf_exc.DownloadError: "download failed",
}


_TWICE_RE = re.compile(r"^Multiple signatures found for keyid:? *([0-9a-fA-F]*)")


def _parse_failure(cause: BaseException | None) -> str:
    """What python-tuf's "Failed to deserialize JSON" was about, in words a user can act on."""
    if isinstance(cause, json.JSONDecodeError):
        if cause.pos >= len(cause.doc.rstrip()) or cause.msg.startswith("Unterminated string"):
            return (
                "not valid TUF metadata: the JSON is truncated "
                f"(it ends after {len(cause.doc)} characters)"
            )
        where = f"line {cause.lineno} column {cause.colno}"
        return f"not valid TUF metadata: not JSON ({cause.msg} at {where})"
    if cause is not None and (m := _TWICE_RE.match(str(cause))):
        key = f" of key {m.group(1)[:16]}" if m.group(1) else ""
        return f"not valid TUF metadata: the signature{key} is listed twice"
    if cause is None:
        return "not valid TUF metadata"
    return f"not valid TUF metadata: {describe(cause)}"


def describe(exc: BaseException) -> str:
    """The useful text of a library exception, without its class name."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, KeyError):
        text = f"missing field {text}"
    if isinstance(exc, DeserializationError):
        text = _parse_failure(exc.__cause__)
    if text:
        return text
    for cls in type(exc).__mro__:
        if cls in _PLAIN:
            return _PLAIN[cls]
    return "failed"


_SERVER_UP = "check the repository URL and that the server is up"

#: First match wins (subclasses before their bases): our class, a suffix for the message,
#: and the hint that tells the operator what the condition usually means.
_MAPPING: tuple[tuple[type[BaseException], type[OtakitError], str, str | None], ...] = (
    (
        tuf_exc.UnsignedMetadataError,
        MetadataError,
        " (expected the threshold of valid signatures by keys the trusted metadata authorizes)",
        "the metadata was not signed by the authorized keys; do not trust this server",
    ),
    (
        tuf_exc.ExpiredMetadataError,
        MetadataError,
        "",
        "the repository must re-sign timestamp/snapshot; if it did, check this device's clock",
    ),
    (
        tuf_exc.BadVersionNumberError,
        MetadataRollbackError,
        "",
        "the server offers older metadata than this device already trusts (rollback or "
        "freeze attack, or a stale mirror)",
    ),
    (tuf_exc.LengthOrHashMismatchError, TargetVerificationError, "", None),
    (
        DeserializationError,
        InvalidMetadataError,
        "",
        "the file is damaged or was not written by a TUF writer; do not trust this server",
    ),
    (tuf_exc.RepositoryError, MetadataError, "", None),
    (
        tuf_exc.DownloadLengthMismatchError,
        MetadataError,
        " (larger than the configured or signed maximum)",
        None,
    ),
    (
        MediumReadError,
        MediumError,
        "",
        "nothing was changed; put the medium back (or copy the export again) and retry",
    ),
    (
        UnsafeMirrorPathError,
        UnsafeMirrorError,
        "",
        "the mirror holds a link or special file where a file was expected; do not trust it",
    ),
    (tuf_exc.DownloadHTTPError, TransportError, "", _SERVER_UP),
    (CannotConnectError, TransportError, "", _SERVER_UP),
    (
        tuf_exc.SlowRetrievalError,
        TransportError,
        "",
        "the server or the network is too slow; retry later (timeouts, minimum throughput "
        "and deadlines are device limits: docs/OPERATIONS.md)",
    ),
    (tuf_exc.DownloadError, TransportError, "", "retry later"),
    (OSError, StorageError, "", None),
)


def map_tuf_error(exc: BaseException, context: str | Callable[[], str]) -> OtakitError:
    """Our error for a tuf (or OS) exception, keeping its message. ``context`` may be
    computed when the failure happens (which file was being verified)."""
    if isinstance(exc, OtakitError):
        return exc
    if callable(context):
        context = context()
    for library, ours, suffix, hint in _MAPPING:
        if isinstance(exc, library):
            prefix = "bad signature: " if library is tuf_exc.UnsignedMetadataError else ""
            return ours(f"{context}: {prefix}{describe(exc)}{suffix}", hint=hint)
    return MetadataError(f"{context}: {describe(exc)}")


@contextlib.contextmanager
def tuf_errors(context: str | Callable[[], str]) -> Iterator[None]:
    """Raise library failures inside the block as our errors, with ``context`` in front."""
    try:
        yield
    except OtakitError:
        raise
    except (tuf_exc.RepositoryError, tuf_exc.DownloadError, OSError, ValueError) as e:
        raise map_tuf_error(e, context) from e
