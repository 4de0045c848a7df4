"""``otakit`` console script (see ``verifier.entry`` for why it is this small)."""

from verifier.entry import run


def main() -> None:
    run("otakit", "signer.cli")
