"""The publisher's one error hierarchy (shared by ``repo`` and ``signer``).

Same three families as the device (security, transport, local) plus usage, so both CLIs
speak the same language and map families to the same stable exit codes.
"""

from __future__ import annotations


class PublisherError(Exception):
    """Base of every error the publisher raises on purpose."""

    exit_code = 1
    family = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostic(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(PublisherError):
    """Arguments or inputs are wrong (bad version string, unknown product, ...)."""

    exit_code = 2
    family = "usage"


class SecurityError(PublisherError):
    """A trust problem: missing or wrong key, threshold not met, self-check failed."""

    exit_code = 3
    family = "security"


class KeyConfigError(SecurityError):
    """The key configuration is invalid or a signer cannot be loaded."""


class ThresholdError(SecurityError):
    """Fewer valid signatures than the role's threshold."""


class SelfCheckError(SecurityError):
    """An artifact did not round-trip through the device's own decoder."""


class TransportError(PublisherError):
    """A remote key service or storage backend failed; retrying may help."""

    exit_code = 4
    family = "transport"


class LocalError(PublisherError):
    """Repository directory, image file or local configuration problem."""

    exit_code = 5
    family = "local"


class RepositoryStateError(LocalError):
    """The on-disk repository is missing, inconsistent, or of an unknown layout."""


class ImageReadError(LocalError):
    """The input image cannot be read."""


class VersionNotNewerError(UsageError):
    """A release's version is not newer than the newest one already published."""


class PublisherBusyError(LocalError):
    """Another publisher holds the repository lock."""


class PublishError(LocalError):
    """Writing the repository failed part-way; the previously published state is intact."""


class UntrustedRepositoryError(SecurityError):
    """Published metadata on disk does not verify against its root: it was tampered with."""
