"""``otakit image diff``: what changed between two OS images, for a reviewer.

The work is in ``signer.imagediff``; this module parses, calls ``diff_images`` and renders.
Paths an image holds that cannot be compared safely (absolute, ``..``, a loop) are warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from signer.imagediff.report import diff_images, render_text
from signer.imagediff.source import TOOL_TIMEOUT
from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EPILOG, run_state

image_app = new_app("Compare OS images (reviewing).")


@image_app.command("diff", epilog=EPILOG)
def diff(
    ctx: typer.Context,
    a: Annotated[
        Path,
        typer.Argument(help="Old image: a file, a slot (block device), a tar or a directory."),
    ],
    b: Annotated[Path, typer.Argument(help="New image.")],
    limit: Annotated[
        int, typer.Option(min=0, help="Rows in the text table, largest first (0: all).")
    ] = 50,
    tool_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds an external tool (sqfs2tar) may run per image."),
    ] = TOOL_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Files and packages added, removed or modified from A to B.

    Nothing is mounted, written or extracted; ext4, squashfs, erofs, tar and directories are
    compared file by file, anything else block by block. A slot may be larger than its image:
    bytes past the filesystem are ignored. The JSON schema is in docs/IMAGE-DIFF.md.
    """
    run = run_state(ctx, json_out)
    result = diff_images(str(a), str(b), tool_timeout=tool_timeout)
    for name, unsafe in ((a, result.unsafe_a), (b, result.unsafe_b)):
        for what in unsafe[:20]:
            run.warn(f"{name}: not compared: {what}")
        if len(unsafe) > 20:
            run.warn(f"{name}: {len(unsafe) - 20} more paths not compared (see --json)")
    for note in result.notes:
        run.note(note)
    run.result(result.to_dict(), render_text(result, limit))
