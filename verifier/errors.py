"""The one error tree of otakit: the device's classes, and the families the publisher shares.

Errors are split by how a caller must react, not by where they were raised:

* ``UsageError`` — the command line or the request was wrong (a typo, a version that is not
  published, an option out of range). Fix the call; nothing is retried, nobody is paged.

* ``SecurityError`` — the update is not authentic or not for us. Never retried silently,
  always reported; nothing that failed such a check reaches the apply step.
* ``TransportError`` — the network or the server misbehaved in a way that retrying may fix.
* ``LocalError`` — this device's disk, slot, boot environment or configuration is the problem.

Every error carries a human diagnostic that names what was expected and what was found.
Both CLIs map each family to a stable exit code (``exit_code``, table in docs/CLI.md) and
render every error in one place (``verifier.cli_contract``). The publisher's own classes
(``repo/errors.py``) subclass these same families, so one ``except OtakitError`` and one
renderer serve both sides, and a family means the same exit code everywhere.
"""

from __future__ import annotations

import re
from typing import Any

#: Version of the JSON error object both CLIs print on stdout with ``--json``.
JSON_ERROR_VERSION = 1


class OtakitError(Exception):
    """Base of every error otakit raises on purpose (device and publisher)."""

    exit_code = 1
    family = "internal"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @classmethod
    def kind(cls) -> str:
        """A stable machine name for the class (``ImageHashMismatchError`` -> ``image-hash-
        mismatch``), so automation can match one condition without parsing messages."""
        name = cls.__name__.removesuffix("Error") or cls.__name__
        return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()

    def diagnostic(self) -> str:
        """A complete, human-readable explanation (what, and what to do)."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_json(self) -> dict[str, Any]:
        """The JSON error object (schema in docs/CLI.md)."""
        return {
            "otakit_json": JSON_ERROR_VERSION,
            "error": {
                "family": self.family,
                "code": self.exit_code,
                "kind": self.kind(),
                "message": self.message,
                "hint": self.hint,
            },
        }


class UsageError(OtakitError):
    """The command line or the call itself was wrong."""

    exit_code = 2
    family = "usage"


class NoSuchVersionError(UsageError):
    """The version asked for is not published for this product and hardware.

    A request for something that does not exist is a typo or a stale runbook, not an attack:
    it must not page the security team (exit 3), and retrying cannot help (exit 4).
    """


class InternalError(OtakitError):
    """An unexpected failure: a bug. Rendered in one line; ``-v`` shows the traceback."""


# --- security: never retry silently ---------------------------------------------------------


class SecurityError(OtakitError):
    """Something is not authentic, not fresh, or not meant for this device."""

    exit_code = 3
    family = "security"


class MetadataError(SecurityError):
    """TUF metadata failed verification (signature, threshold, expiry, rollback, freeze)."""


class MetadataSignatureError(MetadataError):
    """Metadata lacks the threshold of valid signatures by the keys its delegator authorizes."""

    def __init__(self, message: str, *, role: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.role = role


class InvalidMetadataError(MetadataError):
    """A metadata file is missing, unparsable, or differs from what the file naming it says."""


class MetadataExpiredError(MetadataError):
    """Metadata expired before the reference time a caller asked to check against."""


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


class BaseImageMismatchError(ImageHashMismatchError):
    """The booted slot is not the image a delta was built against."""


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


class PreflightError(SlotError):
    """A precondition for writing the inactive slot does not hold; nothing was written."""


class StorageError(LocalError):
    """A write, sync or rename on this device failed (ENOSPC, EIO, ...)."""


class BootControlError(LocalError):
    """The boot environment could not be read or written."""


class InterruptedByUserError(OtakitError):
    """SIGINT (Ctrl-C): the command stopped where it was; a rerun converges."""

    exit_code = 130
    family = "interrupted"


class NothingToDoError(OtakitError):
    """Not a failure: no newer image is available. Exit code 0 by design (docs/CLI.md)."""

    exit_code = 0
    family = "ok"


class TrustedMetadataError(LocalError):
    """The device's own trusted metadata (``STATE/root.json``, ``STATE/metadata``) is damaged:
    never dropped silently, since it holds the rollback floor of every role."""


class RedirectedWriteError(SecurityError):
    """A file the device was about to write is a symlink, a hard link, not a regular file or
    block device, or not its own: writing would go somewhere else. Inside the device's 0700
    directories only root or the device can plant such an entry, so it is reported as
    tampering (never written through, never removed silently)."""


class DeviceBusyError(LocalError):
    """Another ``otakit-device`` holds the state directory's lock (e.g. an update): this
    command waited briefly and gave up instead of queueing behind it."""


class SlotReadBackError(LocalError):
    """The inactive slot does not read back as the bytes just written and verified: the
    medium (or something else writing it) failed, not the signed update, so it is a local
    error, and the boot pointer is not moved."""


class RootGapError(InvalidMetadataError):
    """A published root history misses a version below a root that is present (a reader
    walking the chain stops at the gap and trusts an older root than the repository's)."""


class WithdrawnVersionError(NoSuchVersionError):
    """The version asked for was withdrawn by the publisher (a signed targets change): it is
    still listed, so that devices running it are told, but it is never installed."""


class RolloutWaitError(UsageError):
    """``update --version V`` names a version whose signed rollout has not reached this device
    yet (its waves): the request is refused unless ``--now`` overrides the waves, loudly."""


class HaltedReleaseError(UsageError):
    """``update --version V`` names a version whose signed rollout is halted: no device starts
    it, and ``--now`` does not change that (a halt is the operator saying stop)."""


class RolloutSeedError(ConfigError):
    """The device's rollout seed (``STATE/rollout-seed``) is damaged: never replaced silently,
    since a new seed would move the device to another place in every rollout."""


class ReportPostError(TransportError):
    """``otakit-device report --post`` could not hand the report to the collector (no
    connection, a timeout, or the collector refused it): the device is fine, the report is
    information only, and the next run sends a fresh one."""


class MediumError(TransportError):
    """A local mirror or export (USB stick, mounted image, tar) could not be read, or changed
    while it was read (pulled out mid-read, failing): retry when the medium is back."""


class UnsafeMirrorError(SecurityError):
    """A local mirror or export names a file outside itself, through a link, or as something
    other than a regular file (``..``, absolute or linked names, device nodes, duplicates)."""


class NoSuchTargetError(UsageError):
    """``otakit-device fetch`` names a target that the repository does not sign (neither the
    top-level targets role nor any delegation TUF's search reaches)."""


class MetadataRollbackError(MetadataError):
    """The repository or medium offers metadata older than what the device already trusts
    (a rollback or freeze attack, a stale mirror, or an export made before the device's
    last refresh)."""
