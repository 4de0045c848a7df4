"""The publisher's error classes (``repo`` and ``signer``), in the device's families.

There is one error tree (``verifier.errors``): the families — usage, security, transport,
local — are the device's classes, so both CLIs render every error with one function and a
family means the same exit code on both sides (docs/CLI.md). Only what is particular to
publishing is defined here; the families are imported from the device side, the strictest
reader, which imports nothing from us.
"""

from __future__ import annotations

from verifier.errors import LocalError, OtakitError, SecurityError, TransportError, UsageError

__all__ = [
    "DeltaBuildError",
    "DemoFailedError",
    "ExpiryMarginError",
    "ImageFormatError",
    "ImageReadError",
    "InvalidReportError",
    "KeyConfigError",
    "LocalError",
    "OtakitError",
    "PublishError",
    "PublisherBusyError",
    "RepositoryStateError",
    "RolloutRefusedError",
    "RootExpiredError",
    "RootHistoryGapError",
    "SecurityError",
    "SelfCheckError",
    "StagedChangeError",
    "StagedSignatureError",
    "StaleChangeError",
    "ThresholdError",
    "TransportError",
    "UntrustedRepositoryError",
    "UsageError",
    "VersionNotNewerError",
]


# --- usage ----------------------------------------------------------------------------------


class VersionNotNewerError(UsageError):
    """A release's version is not newer than the newest one already published."""


# --- security -------------------------------------------------------------------------------


class KeyConfigError(SecurityError):
    """A private key is not the configured public key's other half, or a signing backend
    (HSM, KMS) refused to sign. (A malformed configuration is a usage error and an
    unreadable key file a local one: neither is an attack.)"""


class ThresholdError(SecurityError):
    """Fewer valid signatures than the role's threshold."""


class SelfCheckError(SecurityError):
    """An artifact did not round-trip through the device's own decoder."""


class UntrustedRepositoryError(SecurityError):
    """Published metadata on disk does not verify against its root: it was tampered with."""


# --- local ----------------------------------------------------------------------------------


class RepositoryStateError(LocalError):
    """The on-disk repository is missing, inconsistent, or of an unknown layout."""


class ImageReadError(LocalError):
    """The input image cannot be read."""


class ImageFormatError(ImageReadError):
    """An image's filesystem is corrupt or truncated, or breaks a reader's bound."""


class PublisherBusyError(LocalError):
    """Another publisher holds the repository lock."""


class PublishError(LocalError):
    """Writing the repository failed part-way; the previously published state is intact."""


class DeltaBuildError(LocalError):
    """The inputs cannot be turned into a delta container within the format's limits."""


class DemoFailedError(LocalError):
    """The demo ran but its end state is not the one promised."""


class FleetCheckError(LocalError):
    """``otakit fleet simulate`` ran, and some device ended on neither version: the fleet
    promise did not hold in the run (its report says which devices and why)."""


# --- ceremonies (repo.staged, repo.ceremony) -------------------------------------------------


class StagedChangeError(UsageError):
    """A staged-change file is malformed, or a key asked to sign it is listed for none of
    its documents."""


class StaleChangeError(UsageError):
    """A staged change was made against a repository state that is no longer published."""


class StagedSignatureError(SecurityError):
    """A staged change carries a signature that does not verify, one from a key no authority
    lists, or a root that lists one public key under two key ids."""


# --- lifecycle safety (issue 10) ------------------------------------------------------------


class RootExpiredError(RepositoryStateError):
    """The trusted (newest) root has expired: everything signed under it is refused by every
    device, so the publisher refuses to sign under it (renew the root first)."""


class ExpiryMarginError(UsageError):
    """Metadata about to be published would expire within its role's margin: devices would
    refuse it (nearly) at once. The requested expiry is too short; fix the call."""


class RootHistoryGapError(RepositoryStateError):
    """A root version is missing between the first and the newest one: a device walking the
    chain stops at the gap, so signing on top of it would publish under the wrong root."""


# --- fleets (issue 11) ----------------------------------------------------------------------


class RolloutRefusedError(UsageError):
    """A rollout change that does not apply to the release as published (resume of a
    recalled release, advance of a release without waves or at 100 %): nothing is signed."""


class InvalidReportError(UsageError):
    """A device report that is not strict JSON of the report schema (``fleet collect``
    answers 400 and stores nothing; a stored file that fails is skipped and counted)."""
