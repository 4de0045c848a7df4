"""``otakit release --waves``: every target of a release (full and each delta) carries the same
signed rollout policy; a bad spec is refused before anything is built or signed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from repo.errors import UsageError
from repo.keys import KeyConfig
from repo.rollout_spec import parse_waves
from repo.state import load_state
from repo.withdraw import listed_artifacts
from signer.delta.release import delta_builder
from signer.release import release
from tests.helpers_repo import NOW, client_view, publisher_cli, root_bytes
from tests.signer.test_signer_release import _img
from verifier.artifact import CUSTOM_KEY


def _metadata_files(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "metadata").iterdir())


def test_every_target_of_the_release_carries_the_same_policy(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    v1 = _img(tmp_path, "v1")
    v2 = tmp_path / "v2"
    v2.write_bytes(v1.read_bytes()[:-4096] + b"\x01" * 4096)  # a delta from 1.0 pays off
    release(repo, keys, "edge-gw", "1.0", v1, [], NOW)
    spec = "5%@0,25%@24h,100%@3d"
    res = release(
        repo, keys, "edge-gw", "2.0", v2, [], NOW, waves=spec, extra_builder=delta_builder(1)
    )
    assert sorted(a.info.kind for a in res.artifacts) == ["delta", "full"]
    want = parse_waves(spec, NOW)  # the start defaults to the release time
    listed = [
        a
        for a in listed_artifacts(load_state(repo).targets.signed)
        if a.info.version == res.version
    ]
    assert len(listed) == 2
    for a in listed:
        assert a.info.rollout == want
        custom = a.target.unrecognized_fields["custom"][CUSTOM_KEY]
        assert custom["schema"] == "3.0" and custom["rollout"] == want.to_dict()
    # the release before stays readable by every device: no policy, schema 1.1
    old = [
        a for a in listed_artifacts(load_state(repo).targets.signed) if str(a.info.version) == "1.0"
    ]
    assert old[0].info.rollout is None and old[0].custom[CUSTOM_KEY]["schema"] == "1.1"
    assert len(client_view(repo, tmp_path / "c", root_bytes(repo))) == 3


def test_rollout_start_sets_the_start(repo: Path, keys: KeyConfig, tmp_path: Path) -> None:
    later = NOW + timedelta(days=2)
    res = release(
        repo, keys, "edge-gw", "1.0", _img(tmp_path, "v1"), [], NOW,
        waves="50%@0,100%@1d", rollout_start=later,
    )  # fmt: skip
    policy = res.artifacts[0].info.rollout
    assert policy is not None and policy.start == later and policy.allowed_bp(NOW) == 0


@pytest.mark.parametrize(
    ("waves", "start", "match"),
    [
        ("5%@0,25", None, r"expected SHARE%@AFTER.*found '25'"),
        ("50%@0,25%@1h", None, "expected a larger share"),
        (None, NOW, "--rollout-start: expected together with --waves"),
    ],
)
def test_a_bad_spec_is_refused_before_anything_is_signed(
    repo: Path, keys: KeyConfig, tmp_path: Path, waves: str | None, start: object, match: str
) -> None:
    before = _metadata_files(repo)
    with pytest.raises(UsageError, match=match):
        release(
            repo, keys, "edge-gw", "1.0", tmp_path / "never-read", [], NOW,
            waves=waves, rollout_start=start,  # type: ignore[arg-type]
        )  # fmt: skip
    assert _metadata_files(repo) == before


def test_the_cli_signs_the_waves(
    repo: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = publisher_cli(
        capsys, "--json", "release", str(repo), str(_img(tmp_path, "v1")), "--keys",
        str(keys.source), "--product", "edge-gw", "--version", "1.0", "--deltas", "0",
        "--waves", "10%@0,100%@2h", "--rollout-start", "2030-01-01T00:00:00Z",
    )  # fmt: skip
    assert code == 0, err
    import json

    custom = json.loads(out)["artifacts"][0]["custom"][CUSTOM_KEY]
    assert custom["rollout"] == {
        "start": "2030-01-01T00:00:00Z",
        "waves": [{"fleet_bp": 1000, "after_s": 0}, {"fleet_bp": 10000, "after_s": 7200}],
        "halted": False,
    }
    code, out, err = publisher_cli(
        capsys, "release", str(repo), str(_img(tmp_path, "v2")), "--keys", str(keys.source),
        "--product", "edge-gw", "--version", "2.0", "--rollout-start", "tomorrow",
        "--waves", "1%@0",
    )  # fmt: skip
    assert code == 2 and "--rollout-start: expected a UTC time" in err
