"""How an artifact's signed metadata is shown, written once for every reader of it. Pure.

A reviewer reads a published image in ``otakit inspect``; a device shows what its slots hold
in ``otakit-device status`` and ``verify-installed``. Both must show the same fields under the
same names, so that a slot can be matched to the published image it was written from (and
``otakit image diff SLOT IMAGE`` run on the pair when they disagree). The view lives on the
device side because the device is the stricter reader and ``verifier`` imports nothing above
it; ``repo.inspect_report`` calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verifier.artifact import ArtifactInfo


def artifact_fields(a: ArtifactInfo) -> dict[str, Any]:
    """The JSON object of one artifact. Field names are part of both CLIs' JSON schemas
    (docs/INSPECT.md ``targets[].artifact``, ``otakit-device status`` ``slots.*.published``):
    add fields, never rename them."""
    return {
        "product": a.product,
        "hardware": list(a.hardware),
        "version": str(a.version),
        "kind": a.kind,
        "base": (
            {"version": str(a.base.version), **a.base.image.to_dict()}
            if a.base is not None
            else None
        ),
        "image_type": a.image_type,
        "image": a.image.to_dict(),
        "allow_downgrade": a.allow_downgrade,
        "withdrawn": None if a.withdrawn is None else a.withdrawn.to_dict(),
    }


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def artifact_lines(fields: Mapping[str, Any]) -> list[str]:
    """An artifact's JSON object (``artifact_fields``) as three lines of under 80 columns
    (indent them as needed): what it is, the image it writes, and that image's full sha256
    (to compare by eye or script); a fourth, ``withdrawn: REASON``, when it was withdrawn.
    Renders the JSON form, so that a command that renders its
    own ``--json`` document (``otakit-device status``) shows exactly what the JSON says."""
    what = f"{fields['product']} {fields['version']} ({fields['kind']}, "
    what += fields["image_type"] or "image type not recorded"
    if fields["base"] is not None:
        what += f", from {fields['base']['version']}"
    if fields["allow_downgrade"]:
        what += ", downgrade allowed"
    image = fields["image"]
    lines = [
        what + ")",
        f"image {human_size(image['length'])} ({image['length']} bytes)",
        f"sha256 {image['sha256']}",
    ]
    if (w := fields.get("withdrawn")) is not None:
        lines.append(f"withdrawn: {w['reason']} (at {w['time']})")
    return lines


def withdrawn_warning(slot: str, fields: Mapping[str, Any]) -> str | None:
    """The warning a device running a withdrawn image shows (status, verify-installed)."""
    w = fields.get("withdrawn")
    if w is None:
        return None
    return (
        f"slot {slot} runs {fields['product']} {fields['version']}, which the publisher "
        f"withdrew at {w['time']}: withdrawn: {w['reason']}"
    )
