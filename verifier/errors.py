"""The device's one error hierarchy.

Errors are split by how a caller must react, not by where they were raised:

* ``SecurityError`` — the update is not authentic or not for us. Never retried silently,
  always reported; nothing that failed such a check reaches the apply step.
* ``TransportError`` — the network or the server misbehaved in a way that retrying may fix.
* ``LocalError`` — this device's disk, slot, boot environment or configuration is the problem.

Every error carries a human diagnostic that names what was expected and what was found.
The CLI maps each family to a stable exit code (``exit_code``) and renders it in one place.
"""

from __future__ import annotations


class OtakitError(Exception):
    """Base of every error the device side raises on purpose."""

    exit_code = 1
    family = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostic(self) -> str:
        """A complete, human-readable explanation (what, and what to do)."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(OtakitError):
    """The command line or the call itself was wrong."""

    exit_code = 2
    family = "usage"


# --- security: never retry silently ---------------------------------------------------------


class SecurityError(OtakitError):
    """Something is not authentic, not fresh, or not meant for this device."""

    exit_code = 3
    family = "security"


class MetadataError(SecurityError):
    """TUF metadata failed verification (signature, threshold, expiry, rollback, freeze)."""


class TargetVerificationError(SecurityError):
    """A downloaded artifact does not match its signed length or hashes."""


class ArtifactSchemaError(SecurityError):
    """Signed ``custom`` metadata does not follow the otakit artifact schema."""


class IncompatibleTargetError(SecurityError):
    """A target is for another product or hardware, or breaks the version policy."""


class ImageHashMismatchError(SecurityError):
    """Bytes written or read back do not hash to the signed image hash."""


class DeltaFormatError(SecurityError):
    """A delta container is malformed or violates a bound."""


class DecodeLimitError(SecurityError):
    """Decoded output would exceed a signed length or a hard limit."""


class DowngradeError(SecurityError):
    """The offered image is older than the one running and no signed policy allows it."""


# --- transport: retry ----------------------------------------------------------------------


class TransportError(OtakitError):
    """The repository could not be reached or served a broken response; retry later."""

    exit_code = 4
    family = "transport"


# --- local: disk, slot, boot environment, configuration -------------------------------------


class LocalError(OtakitError):
    """A problem on this device: disk, slot, boot environment or configuration."""

    exit_code = 5
    family = "local"


class ConfigError(LocalError):
    """The device configuration or state directory is missing or invalid."""


class SlotError(LocalError):
    """A slot cannot be used (missing, too small, active, mounted read-write)."""


class StorageError(LocalError):
    """A write, sync or rename on this device failed (ENOSPC, EIO, ...)."""


class BootControlError(LocalError):
    """The boot environment could not be read or written."""


class NothingToDoError(OtakitError):
    """Not a failure: no newer image is available. Exit code 0 by design."""

    exit_code = 0
    family = "ok"
