"""``otakit keys generate`` and ``otakit keys import-hsm``: production keys, by reference.

Each prints the ``keys.json`` entry (docs/REPOSITORY.md) for the key it made or found, so
the configuration is pasted, never hand-written. Secrets (a new key's passphrase, a token's
PIN) come from a terminal prompt or a named environment variable; there is no option that
takes one, and neither command prints one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from repo.hsm_keys import TokenKeySpec, import_hsm_key, pin_source, spec_from_options
from repo.keygen import KEY_SCHEMES, RSA_BITS, generate_key_file, new_passphrase
from repo.keys import PromptFn, tty_prompt
from verifier.cli_common import JsonOpt
from verifier.cli_contract import EPILOG, run_state


def keys_generate(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option("--out", metavar="PATH", help="New private key file (PEM, written 0600)."),
    ],
    key_type: Annotated[
        str,
        typer.Option("--type", metavar="TYPE", help=f"{', '.join(KEY_SCHEMES)}."),
    ] = "ed25519",
    rsa_bits: Annotated[int, typer.Option(help="RSA modulus size (rsa-pss only).")] = RSA_BITS,
    passphrase_env: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Encrypt with the passphrase in environment variable NAME."
        ),
    ] = None,
    passphrase_prompt: Annotated[
        bool,
        typer.Option("--passphrase-prompt", help="Encrypt with a passphrase asked twice."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate a private key file and print its keys.json entry.

    The file is never overwritten. A passphrase is never taken from the command line.
    """
    run = run_state(ctx, json_out)
    passphrase = new_passphrase(
        env_name=passphrase_env, ask=passphrase_prompt, env=os.environ, prompt=tty_prompt()
    )
    key = generate_key_file(
        out, key_type, passphrase=passphrase, secret_env=passphrase_env, rsa_bits=rsa_bits
    )
    run.result(key.to_json(), json.dumps(key.entry(), indent=2))
    run.note(
        f"wrote {key.path} ({key.key_type}, key id {key.keyid[:12]}, "
        f"{'encrypted' if key.encrypted else 'NOT encrypted'}); paste the entry above into "
        "a role's keys in keys.json"
    )
    if key.encrypted and not key.secret_env:
        run.note(
            'signing will ask for the passphrase, or add "secret_env": "NAME" to the entry '
            "and export NAME"
        )


def keys_import_hsm(
    ctx: typer.Context,
    uri: Annotated[
        str | None,
        typer.Option(metavar="URI", help="RFC 7512 key URI, e.g. 'pkcs11:token=ca;object=root-1'."),
    ] = None,
    token_label: Annotated[
        str | None, typer.Option(metavar="LABEL", help="Token label (instead of --uri).")
    ] = None,
    key_label: Annotated[
        str | None, typer.Option(metavar="LABEL", help="Key label (CKA_LABEL) on the token.")
    ] = None,
    pin_env: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Environment variable holding the token's user PIN."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Register an ECDSA key that lives on a PKCS#11 token.

    Reads its public key from the token (PYKCS11LIB names the module), proves the token
    signs with it, and prints its keys.json entry. The PIN comes from --pin-env or a prompt.
    """
    run = run_state(ctx, json_out)
    spec: TokenKeySpec = spec_from_options(uri, token_label, key_label)
    key = import_hsm_key(spec, pin=pin_source(pin_env, os.environ, tty_prompt()), pin_env=pin_env)
    run.result(key.to_json(), json.dumps(key.entry(), indent=2))
    run.note(
        f"token {key.token_label!r} key {key.key_label or '(no label)'} id {key.key_id_hex}: "
        f"key id {key.keyid[:12]}, signs on the token; paste the entry above into a role's "
        "keys in keys.json"
    )


def paused_prompt(bar: Progress, prompt: PromptFn | None) -> PromptFn | None:
    """``prompt`` with ``bar`` taken off the terminal while it waits for an answer.

    A live progress bar redraws its line ten times a second; a passphrase or PIN prompt
    asked under it is wiped at once and the command looks hung at 0 %.
    """
    if prompt is None:
        return None
    ask = prompt

    def paused(text: str) -> str:
        bar.stop()
        try:
            return ask(text)
        finally:
            bar.start()

    return paused


def register(keys_app: typer.Typer) -> None:
    """Add these commands to ``otakit keys``."""
    keys_app.command("generate", epilog=EPILOG)(keys_generate)
    keys_app.command("import-hsm", epilog=EPILOG)(keys_import_hsm)
