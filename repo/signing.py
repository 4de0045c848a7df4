"""Staged metadata becomes publishable only by being signed to threshold (STYLE.md §6).

``sign_metadata`` is the one way to obtain a ``SignedMetadata``: it signs, serializes exactly
once, then re-parses those very bytes and checks them against the delegating role's keys and
threshold. What is written to disk later is that byte string, so the signature that was
checked is the signature that is published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, MetaFile, Root  # type: ignore[attr-defined]
from tuf.api.serialization.json import JSONSerializer

from repo.errors import OtakitError, SecurityError, ThresholdError
from repo.layout import metadata_filename


@dataclass(frozen=True)
class SignedMetadata:
    """Serialized metadata whose signatures met the threshold. Only ``sign_metadata`` makes one."""

    role: str
    version: int
    data: bytes = field(repr=False)
    sha256: str
    signed_by: tuple[str, ...]

    @property
    def filename(self) -> str:
        return metadata_filename(self.role, self.version)

    @property
    def length(self) -> int:
        return len(self.data)

    def meta_file(self) -> MetaFile:
        """How snapshot/timestamp reference these exact bytes."""
        return MetaFile(version=self.version, length=len(self.data), hashes={"sha256": self.sha256})


def sign_metadata(
    md: Metadata[Any], signers: Sequence[Signer], authorities: Sequence[Root]
) -> SignedMetadata:
    """Sign ``md`` with each distinct key once and check every authority's threshold.

    ``authorities`` are the roots whose keys must approve: the current root for targets,
    snapshot and timestamp; for a new root both the trusted and the new one (TUF §5.3.4).
    """
    role = md.signed.type
    md.signatures.clear()
    for signer in signers:
        keyid = signer.public_key.keyid
        if keyid in md.signatures:
            continue
        try:
            md.sign(signer, append=True)
        except Exception as e:  # any signer backend failure (HSM, KMS, file)
            if isinstance(e.__cause__, OtakitError):
                # e.g. a missing PIN, already explained by our secrets handler
                raise e.__cause__ from None
            raise SecurityError(
                f"{role}: signing with key {keyid[:12]} failed: {type(e).__name__}: {e}"
            ) from e
    data = md.to_bytes(JSONSerializer(compact=False))
    parsed: Metadata[Any] = Metadata.from_bytes(data)
    for authority in authorities:
        result = authority.get_verification_result(role, parsed.signed_bytes, parsed.signatures)
        if not result.verified:
            authorized = set(authority.roles[role].keyids)
            strangers = sorted(k[:12] for k in parsed.signatures if k not in authorized)
            raise ThresholdError(
                f"{role} v{md.signed.version}: expected {result.threshold} valid signature(s) "
                f"from keys in root v{authority.version}, found {len(result.signed)}"
                + (f" (signed by keys root does not list: {strangers})" if strangers else ""),
                hint="load more of the role's keys (see the key configuration) or check that "
                "the configuration matches the root metadata",
            )
    return SignedMetadata(
        role=role,
        version=md.signed.version,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        signed_by=tuple(sorted(parsed.signatures)),
    )
