"""python-tuf, transport and OS exceptions mapped into the device's error hierarchy.

The library's exception class names mean nothing to a user, so messages keep the library's
text (which names the file and the numbers) under our context, never ``ClassName: ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tuf.api import exceptions as tuf_exc
from tuf.api.serialization import DeserializationError

from verifier.errors import (
    MetadataError,
    OtakitError,
    StorageError,
    TargetVerificationError,
    TransportError,
)
from verifier.tuf.fetcher import CannotConnectError

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


def describe(exc: BaseException) -> str:
    """The useful text of a library exception, without its class name."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, KeyError):
        text = f"missing field {text}"
    if isinstance(exc, DeserializationError) and exc.__cause__ is not None:
        text = f"{text or 'cannot parse'} ({describe(exc.__cause__)})"
    if text:
        return text
    for cls in type(exc).__mro__:
        if cls in _PLAIN:
            return _PLAIN[cls]
    return "failed"


def map_tuf_error(exc: BaseException, context: str) -> OtakitError:
    """Our error for a tuf (or OS) exception, keeping its message."""
    if isinstance(exc, OtakitError):
        return exc
    msg = f"{context}: {describe(exc)}"
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return MetadataError(
            f"{context}: bad signature: {describe(exc)} (expected the threshold of valid "
            f"signatures by keys the trusted metadata authorizes)",
            hint="the metadata was not signed by the authorized keys; do not trust this server",
        )
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return MetadataError(
            msg,
            hint="the repository must re-sign timestamp/snapshot; "
            "if it did, check this device's clock",
        )
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        return MetadataError(
            msg,
            hint="the server offers older metadata than this device "
            "already trusts (rollback or freeze attack, or a stale mirror)",
        )
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError):
        return TargetVerificationError(msg)
    if isinstance(exc, tuf_exc.RepositoryError):
        return MetadataError(msg)
    if isinstance(exc, tuf_exc.DownloadLengthMismatchError):
        return MetadataError(msg + " (larger than the configured or signed maximum)")
    if isinstance(exc, tuf_exc.DownloadHTTPError):
        return TransportError(msg, hint="check the repository URL and that the server is up")
    if isinstance(exc, CannotConnectError):
        return TransportError(msg, hint="check the repository URL and that the server is up")
    if isinstance(exc, tuf_exc.SlowRetrievalError):
        return TransportError(
            msg,
            hint="the server or the network is too slow; retry later "
            "(the socket timeout is a device limit)",
        )
    if isinstance(exc, tuf_exc.DownloadError):
        return TransportError(msg, hint="retry later")
    if isinstance(exc, OSError):
        return StorageError(msg)
    return MetadataError(msg)


@contextlib.contextmanager
def tuf_errors(context: str) -> Iterator[None]:
    """Raise library failures inside the block as our errors, with ``context`` in front."""
    try:
        yield
    except OtakitError:
        raise
    except (tuf_exc.RepositoryError, tuf_exc.DownloadError, OSError, ValueError) as e:
        raise map_tuf_error(e, context) from e
