"""The otakit artifact schema, carried in each TUF target's ``custom`` metadata.

The device trusts nothing that is not inside signed metadata: the image hash it checks at the
end of an update is the one parsed here, never one found in the artifact itself. Parsing is
strict ("parse, don't validate"): an ``ArtifactInfo`` that exists is complete and bounded.

Schema (specified in docs/FORMAT.md, section "Artifact metadata")::

    "custom": {"otakit": {
        "schema": "1.1",                 # major.minor; unknown major refused
        "product": "edge-gw",            # [a-z0-9][a-z0-9._-]{0,63}
        "hardware": ["rpi4", "x86-64"],  # non-empty list of hardware ids, same charset
        "version": "2.4.1",              # dotted numeric, 1-4 components, see ImageVersion
        "kind": "full" | "delta",
        "compression": "zstd",           # full: zstd frame(s); delta: "otakit-delta"
        "image": {"length": N, "sha256": "hex64"},          # the uncompressed result image
        "base": {"version": V, "length": N, "sha256": H},   # delta only
        "delta_header": {"length": N, "sha256": H},         # delta only: authenticates the
                                                            # container header for streaming
        "allow_downgrade": false,        # optional; signed permission to go back in version
        "image_type": "ext4",            # optional (since 1.1); see verifier.imagetype
        "withdrawn": {"reason": "...", "time": "2026-12-02T01:00:00Z"},  # schema 2.0+
                                         # 3.0 adds "recall": true (devices on it go back)
        "rollout": {"start": ..., "waves": [...], "halted": false}  # schema 3.0; rollout.py
    }}

Schema 1.1 added ``image_type``; a 1.0 target has none and parses with ``image_type=None``.

Schema 2.0 is 1.1 plus ``withdrawn``: the publisher took the release back (``otakit release
withdraw``). The target stays listed, so that a device running it can be told, but it is never
installed. It is a *major* version because a reader that does not know ``withdrawn`` must not
read the target at all: a 1.x reader ignores unknown keys and would install a withdrawn
image, while it refuses an unknown major, and a device refuses such a target by skipping it
(``verifier.tuf.client.candidate``). Only withdrawn targets are written as 2.0; every other
target stays 1.1, readable by every device in the field.

Schema 3.0 adds the fleet controls of issue 11: ``rollout`` (signed waves and halt,
``verifier.rollout``) and ``withdrawn.recall`` (devices running the release go back). Major
again, for the same reason: a 2.x reader would ignore the waves and a halt (starting a halted
release on the whole fleet at once) and a 2.0 reader refuses ``recall`` inside ``withdrawn``
anyway. Only targets carrying one of them are written as 3.0, so a release without waves
stays readable by every device in the field; a device too old for 3.0 skips a wave-controlled
release, which is the fail-closed outcome (it updates again on a release without waves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from verifier.errors import ArtifactSchemaError
from verifier.imagetype import IMAGE_TYPES, ImageType, is_image_type
from verifier.rollout import RolloutPolicy

SCHEMA_VERSION = "1.1"
#: the schema of a withdrawn target (see the module docstring)
WITHDRAWN_SCHEMA = "2.0"
#: the schema of a target with a rollout policy or a recall (see the module docstring)
ROLLOUT_SCHEMA = "3.0"
#: the majors this reader understands
SCHEMA_MAJORS = (1, 2, 3)
#: a withdrawal's reason is shown on device terminals: bounded, one line, printable
MAX_REASON_LENGTH = 500
CUSTOM_KEY = "otakit"

#: No image otakit handles is larger than this (1 TiB); bounds every length before use.
MAX_IMAGE_LENGTH = 1 << 40

# \Z, not $: "$" also matches before a final newline, and "1.2.3\n" is no version.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}\Z")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")

Kind = Literal["full", "delta"]


@dataclass(frozen=True, order=False)
class ImageVersion:
    """An image version: 1 to 4 dot-separated decimal numbers, compared numerically.

    ``2.10`` is newer than ``2.9``; missing trailing components count as zero, so ``2`` and
    ``2.0.0`` are the same version. No letters, no pre-release tags: the order must be total
    and obvious to a reviewer reading signed metadata.
    """

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: object) -> ImageVersion:
        if not isinstance(text, str) or not _VERSION_RE.match(text):
            raise ArtifactSchemaError(
                f"invalid image version: expected 1-4 dot-separated decimal numbers "
                f"without leading zeros (e.g. '2.4.1'), found {text!r}"
            )
        return cls(tuple(int(p) for p in text.split(".")))

    def _key(self) -> tuple[int, ...]:
        return self.parts + (0,) * (4 - len(self.parts))

    def __lt__(self, other: ImageVersion) -> bool:
        return self._key() < other._key()

    def __le__(self, other: ImageVersion) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: ImageVersion) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: ImageVersion) -> bool:
        return self._key() >= other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageVersion) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


@dataclass(frozen=True)
class ImageRef:
    """Length and sha256 of an uncompressed image (the thing written to a slot)."""

    length: int
    sha256: str

    @classmethod
    def from_dict(cls, data: Any, what: str) -> ImageRef:
        if not isinstance(data, dict):
            raise ArtifactSchemaError(f"{what}: expected an object, found {type(data).__name__}")
        _only_keys(data, {"length", "sha256"}, what)
        length = data.get("length")
        sha = data.get("sha256")
        if (
            not isinstance(length, int)
            or isinstance(length, bool)
            or not (0 < length <= MAX_IMAGE_LENGTH)
        ):
            raise ArtifactSchemaError(
                f"{what}.length: expected an integer in 1..{MAX_IMAGE_LENGTH}, found {length!r}"
            )
        if not isinstance(sha, str) or not _HEX64_RE.match(sha):
            raise ArtifactSchemaError(
                f"{what}.sha256: expected 64 lowercase hex digits, found {sha!r}"
            )
        return cls(length, sha)

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "sha256": self.sha256}


@dataclass(frozen=True)
class Withdrawal:
    """Why and when the publisher withdrew a release (signed, inside the target's custom)."""

    reason: str
    #: UTC, ``YYYY-MM-DDTHH:MM:SSZ``
    time: str
    #: A recall (schema 3.0): devices running the release go back to the verified previous
    #: image or to the newest release not taken back; a plain withdrawal leaves them on it.
    recall: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.recall, bool):
            raise ArtifactSchemaError(
                f"withdrawn.recall: expected true or false, found {self.recall!r}"
            )
        r = self.reason
        if (
            not isinstance(r, str)
            or not r.strip()
            or len(r) > MAX_REASON_LENGTH
            or not r.isprintable()
        ):
            raise ArtifactSchemaError(
                f"withdrawn.reason: expected 1-{MAX_REASON_LENGTH} printable characters on one "
                f"line, found {r!r}"[: 200 + MAX_REASON_LENGTH]
            )
        t = self.time
        ok = isinstance(t, str) and bool(_TIME_RE.match(t))
        if ok:
            try:
                datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                ok = False
        if not ok:
            raise ArtifactSchemaError(
                f"withdrawn.time: expected a UTC time YYYY-MM-DDTHH:MM:SSZ, found {t!r}"
            )

    @classmethod
    def from_dict(cls, data: Any) -> Withdrawal:
        if not isinstance(data, dict):
            raise ArtifactSchemaError(f"withdrawn: expected an object, found {type(data).__name__}")
        _only_keys(data, {"reason", "time", "recall"}, "withdrawn")
        return cls(
            data.get("reason"),  # type: ignore[arg-type]
            data.get("time"),  # type: ignore[arg-type]
            data.get("recall", False),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"reason": self.reason, "time": self.time}
        if self.recall:
            d["recall"] = True
        return d


@dataclass(frozen=True)
class BaseRef:
    """The image a delta applies to."""

    version: ImageVersion
    image: ImageRef


@dataclass(frozen=True)
class ArtifactInfo:
    """One artifact, as described by signed metadata."""

    product: str
    hardware: tuple[str, ...]
    version: ImageVersion
    kind: Kind
    compression: str
    image: ImageRef
    base: BaseRef | None = None
    delta_header: ImageRef | None = None
    allow_downgrade: bool = False
    #: What the image is (filesystem or disk-image format); None on schema 1.0 targets.
    image_type: ImageType | None = None
    #: Set when the publisher withdrew this release (schema 2.0): never installed.
    withdrawn: Withdrawal | None = None
    #: The signed staged-rollout policy (schema 3.0); None: the whole fleet at once.
    rollout: RolloutPolicy | None = None

    @property
    def recalled(self) -> bool:
        return self.withdrawn is not None and self.withdrawn.recall

    @property
    def standing(self) -> str:
        """One line for listings: how the publisher stands by this release now."""
        if self.withdrawn is not None:
            what = "recalled" if self.withdrawn.recall else "withdrawn"
            return f"{what} {self.withdrawn.time}: {self.withdrawn.reason}"
        if self.rollout is not None and self.rollout.halted:
            return "halted"
        if self.rollout is not None:
            return f"in waves from {self.rollout.to_dict()['start']}"
        return "live"

    @property
    def schema(self) -> str:
        """The schema this artifact is written as: the oldest that can say all of it."""
        if self.rollout is not None or self.recalled:
            return ROLLOUT_SCHEMA
        return SCHEMA_VERSION if self.withdrawn is None else WITHDRAWN_SCHEMA

    def __post_init__(self) -> None:
        if self.image_type is not None and not is_image_type(self.image_type):
            raise ArtifactSchemaError(_image_type_problem(self.image_type))
        if self.kind == "delta" and (self.base is None or self.delta_header is None):
            raise ArtifactSchemaError("delta artifact: 'base' and 'delta_header' are required")
        if self.kind == "full" and (self.base is not None or self.delta_header is not None):
            raise ArtifactSchemaError("full artifact: 'base' and 'delta_header' must be absent")
        expected = "zstd" if self.kind == "full" else "otakit-delta"
        if self.compression != expected:
            raise ArtifactSchemaError(
                f"{self.kind} artifact: expected compression {expected!r}, "
                f"found {self.compression!r}"
            )

    def supports(self, product: str, hardware: str | None) -> bool:
        return self.product == product and (hardware is None or hardware in self.hardware)

    @classmethod
    def from_custom(cls, custom: Any) -> ArtifactInfo:
        """Parse a target's whole ``custom`` dict (which must hold the ``otakit`` key)."""
        if not isinstance(custom, dict) or CUSTOM_KEY not in custom:
            raise ArtifactSchemaError(
                f"target custom metadata: expected an object with key {CUSTOM_KEY!r}, "
                f"found {sorted(custom) if isinstance(custom, dict) else type(custom).__name__}"
            )
        return cls.from_dict(custom[CUSTOM_KEY])

    @classmethod
    def from_dict(cls, data: Any) -> ArtifactInfo:
        if not isinstance(data, dict):
            raise ArtifactSchemaError(
                f"otakit artifact: expected an object, found {type(data).__name__}"
            )
        schema = data.get("schema")
        if not isinstance(schema, str) or not re.match(r"^[0-9]+\.[0-9]+\Z", schema):
            raise ArtifactSchemaError(f"schema: expected 'MAJOR.MINOR', found {schema!r}")
        if int(schema.split(".")[0]) not in SCHEMA_MAJORS:
            raise ArtifactSchemaError(
                f"schema: this device reads major versions "
                f"{', '.join(map(str, SCHEMA_MAJORS))}, found {schema!r}",
                hint="update otakit-device before installing artifacts of a newer schema",
            )
        # Minor versions may add keys; this device ignores unknown ones (forward compatible).
        product = _name(data.get("product"), "product")
        hw_raw = data.get("hardware")
        if not isinstance(hw_raw, list) or not hw_raw or len(hw_raw) > 256:
            raise ArtifactSchemaError(
                f"hardware: expected a non-empty list of at most 256 ids, found {hw_raw!r}"
            )
        hardware = tuple(_name(h, "hardware[]") for h in hw_raw)
        version = ImageVersion.parse(data.get("version"))
        kind = data.get("kind")
        if kind not in ("full", "delta"):
            raise ArtifactSchemaError(f"kind: expected 'full' or 'delta', found {kind!r}")
        compression = data.get("compression")
        if not isinstance(compression, str):
            raise ArtifactSchemaError(f"compression: expected a string, found {compression!r}")
        image = ImageRef.from_dict(data.get("image"), "image")
        base = None
        delta_header = None
        if kind == "delta":
            b = data.get("base")
            if not isinstance(b, dict):
                raise ArtifactSchemaError(f"base: expected an object, found {b!r}")
            base = BaseRef(
                ImageVersion.parse(b.get("version")),
                ImageRef.from_dict({k: v for k, v in b.items() if k != "version"}, "base"),
            )
            delta_header = ImageRef.from_dict(data.get("delta_header"), "delta_header")
        allow = data.get("allow_downgrade", False)
        if not isinstance(allow, bool):
            raise ArtifactSchemaError(f"allow_downgrade: expected true/false, found {allow!r}")
        image_type = data.get("image_type")
        if image_type is not None and not is_image_type(image_type):
            raise ArtifactSchemaError(_image_type_problem(image_type))
        # A 1.x target carrying ``withdrawn`` is honoured too: the strictest reading wins.
        w = data.get("withdrawn")
        withdrawn = None if w is None else Withdrawal.from_dict(w)
        r = data.get("rollout")
        rollout = None if r is None else RolloutPolicy.from_dict(r, "rollout")
        return cls(
            product=product,
            hardware=hardware,
            version=version,
            kind=kind,
            compression=compression,
            image=image,
            base=base,
            delta_header=delta_header,
            allow_downgrade=allow,
            image_type=image_type,
            withdrawn=withdrawn,
            rollout=rollout,
        )

    def to_custom(self) -> dict[str, Any]:
        """The ``custom`` dict for a TUF ``TargetFile`` (inverse of ``from_custom``)."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "product": self.product,
            "hardware": list(self.hardware),
            "version": str(self.version),
            "kind": self.kind,
            "compression": self.compression,
            "image": self.image.to_dict(),
        }
        if self.base is not None:
            d["base"] = {"version": str(self.base.version), **self.base.image.to_dict()}
        if self.delta_header is not None:
            d["delta_header"] = self.delta_header.to_dict()
        if self.allow_downgrade:
            d["allow_downgrade"] = True
        if self.image_type is not None:
            d["image_type"] = self.image_type
        if self.withdrawn is not None:
            d["withdrawn"] = self.withdrawn.to_dict()
        if self.rollout is not None:
            d["rollout"] = self.rollout.to_dict()
        return {CUSTOM_KEY: d}


def target_path(info: ArtifactInfo) -> str:
    """The TUF target path otakit publishes an artifact under (a name, never a device path)."""
    if info.kind == "full":
        return f"{info.product}/{info.version}/full.img.zst"
    assert info.base is not None
    return f"{info.product}/{info.version}/delta-from-{info.base.version}.otd"


def _image_type_problem(value: object) -> str:
    return f"image_type: expected one of {', '.join(IMAGE_TYPES)}, found {value!r}"


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ArtifactSchemaError(
            f"{what}: expected 1-64 chars of [a-z0-9._-] starting with a letter or digit, "
            f"found {value!r}"
        )
    return value


def _only_keys(data: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = set(data) - allowed
    if extra:
        raise ArtifactSchemaError(f"{what}: unexpected keys {sorted(extra)}")
