"""Options several publisher command modules share (``signer.cli``, ``signer.rollout_cmd``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ProductKeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--product-keys",
        metavar="ROLEKEYS",
        help="Key file of a delegated product's role (docs/REPOSITORY.md).",
    ),
]
