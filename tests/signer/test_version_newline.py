"""Issue 9: "1.2.3\\n" was a version on both sides ($ matches before a final newline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repo.keys import KeyConfig
from repo.state import load_state
from signer.release import release
from tests.helpers_repo import NOW
from verifier.errors import OtakitError


def test_the_publisher_refuses_a_version_ending_in_a_newline(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    image = tmp_path / "img"
    image.write_bytes(bytes(1 << 16))
    with pytest.raises(OtakitError, match=r"invalid image version: .* found '1\.2\.3\\n'"):
        release(repo, keys, "edge-gw", "1.2.3\n", image, [], NOW, image_type="raw")
    assert load_state(repo).timestamp.signed.version == 1  # nothing published
