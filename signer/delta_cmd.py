"""``otakit delta create|apply``: debug commands around the delta container.

``apply`` takes the header's length and hash from the container itself, so it proves only
that the container is self-consistent and rebuilds the image it names; a device takes them
from signed metadata instead. Errors propagate to ``signer.cli.main`` (the one renderer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from repo.errors import SelfCheckError, UsageError
from signer.delta.encode import create_options, encode_delta, read_header_ref
from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EPILOG, run_state
from verifier.delta.decode import apply_delta
from verifier.delta.format import FORMAT_VERSION, parse_prefix
from verifier.effects import RealDisk
from verifier.errors import OtakitError

delta_app = new_app("Build and apply delta images (debugging).")


@delta_app.command("create", epilog=EPILOG)
def create(
    ctx: typer.Context,
    base: Annotated[Path, typer.Argument(help="Base image (what the device runs).")],
    new: Annotated[Path, typer.Argument(help="New image.")],
    out: Annotated[Path, typer.Argument(help="Delta container to write.")],
    level: Annotated[
        int | None,
        typer.Option(min=1, max=22, help="zstd level for new data [default: 3, --max: 12]."),
    ] = None,
    ref_window: Annotated[
        int, typer.Option(min=1, max=16, help="Base reference window per zone (MiB).")
    ] = 4,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Compression threads.")] = 2,
    smallest: Annotated[
        bool,
        typer.Option(
            "--max",
            help="Smaller delta: zstd level 12 + DIFF ops (slower).",
        ),
    ] = False,
    format_version: Annotated[
        int,
        typer.Option(
            "--format",
            min=1,
            max=FORMAT_VERSION,
            help="Container version; 1 for devices without DIFF ops.",
        ),
    ] = FORMAT_VERSION,
    json_out: JsonOpt = False,
) -> None:
    """Write OUT, a delta turning BASE into NEW.

    The delta is checked with the device's own decoder before the command succeeds.
    """
    run = run_state(ctx, json_out)
    options = create_options(
        level=level,
        ref_window=ref_window << 20,
        workers=workers,
        smallest=smallest,
        format_version=format_version,
    )
    r = encode_delta(base, new, out, options=options)
    doc: dict[str, Any] = {
        "delta": {"path": str(out), "length": r.delta_length},
        "format": r.format_version,
        "level": options.level,
        "delta_header": r.header.to_dict(),
        "base": r.base.to_dict(),
        "result": r.result.to_dict(),
        "ops": r.kinds,
        "bytes": {"copy": r.copy_bytes, "zero": r.zero_bytes, "new": r.new_bytes},
        "payload_length": r.payload_bytes,
        "verified": r.verified,
        "seconds": {
            "index": round(r.timings.index_s, 3),
            "scan": round(r.timings.scan_s, 3),
            "emit": round(r.timings.emit_s, 3),
            "verify": round(r.timings.verify_s, 3),
            "total": round(r.timings.total_s, 3),
        },
    }
    run.result(
        doc,
        f"{out}: {r.delta_length} bytes ({r.delta_length / r.result.length:.2%} of the image), "
        f"{sum(r.kinds.values())} ops, {r.timings.total_s:.2f} s, verified={r.verified}",
    )


@delta_app.command("apply", epilog=EPILOG)
def apply(
    ctx: typer.Context,
    base: Annotated[Path, typer.Argument(help="Base image.")],
    delta: Annotated[Path, typer.Argument(help="Delta container.")],
    out: Annotated[Path, typer.Argument(help="Result image to write.")],
    json_out: JsonOpt = False,
) -> None:
    """Rebuild the new image into OUT from BASE and DELTA.

    The expected lengths and hashes are taken from the container itself.
    """
    run = run_state(ctx, json_out)
    t0 = time.perf_counter()
    try:
        with delta.open("rb") as f:
            header_ref = read_header_ref(f)
            f.seek(0)
            header = parse_prefix(f.read(header_ref.length))
    except OtakitError as e:
        # the wrong file was named: a usage problem, not a failed security check
        raise UsageError(f"{delta}: expected a delta container, found {e.message}") from e
    handle = RealDisk().open_write(out, new=not out.exists(), truncate=True)
    try:
        with delta.open("rb") as d, base.open("rb") as b:
            apply_delta(
                d,
                b,
                handle,
                base_ref=header.base,
                result_ref=header.result,
                header_ref=header_ref,
            )
    except OtakitError as e:
        # rendered by signer.cli.main like every publisher error; OUT is not a valid image
        raise SelfCheckError(f"{delta} does not apply to {base}: {e.message}", hint=e.hint) from e
    finally:
        handle.close()
    seconds = time.perf_counter() - t0
    doc = {
        "result": {"path": str(out), **header.result.to_dict()},
        "base": header.base.to_dict(),
        "delta": {"path": str(delta), "length": delta.stat().st_size},
        "delta_header": header_ref.to_dict(),
        "seconds": round(seconds, 3),
    }
    run.result(
        doc, f"{out}: {header.result.length} bytes, sha256 {header.result.sha256}, {seconds:.2f} s"
    )
