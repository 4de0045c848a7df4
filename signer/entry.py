"""``otakit`` console script: light to import, so Ctrl-C while the CLI loads is clean."""

from verifier.cli_contract import guarded_main


def main() -> None:
    guarded_main("otakit", "signer.cli")
