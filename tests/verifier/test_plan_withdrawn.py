"""A withdrawn release is never started (verifier.plan), and the schema that says so
(verifier.artifact, schema 2.0) is read strictly; an old reader skips such a target."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from tuf.api.metadata import TargetFile

from tests.verifier.test_plan import delta, facts, full
from verifier.artifact import ArtifactInfo, Withdrawal
from verifier.errors import ArtifactSchemaError, NoSuchVersionError, WithdrawnVersionError
from verifier.plan import Candidate, NothingToDo, Policy, UpdatePlan, resolve
from verifier.tuf.client import candidate

W = Withdrawal("bricks rev-B boards", "2026-12-01T10:00:00Z")


def withdrawn(c: Candidate) -> Candidate:
    return dataclasses.replace(c, info=dataclasses.replace(c.info, withdrawn=W))


@pytest.mark.parametrize(
    ("name", "targets", "installed", "expect"),
    [
        ("the newest is withdrawn: stay", [full("1.0"), withdrawn(full("2.0"))], "1.0", None),
        (
            "a withdrawn newest is passed over for a good newer one",
            [full("1.0"), full("2.0"), withdrawn(full("3.0"))],
            "1.0",
            "edge-gw/2.0/full.img.zst",
        ),
        (
            "neither its delta nor its full artifact",
            [full("1.0"), withdrawn(full("2.0")), withdrawn(delta("2.0", "1.0"))],
            "1.0",
            None,
        ),
        (
            "one withdrawn target withdraws the whole version (strictest reading)",
            [full("1.0"), full("2.0"), withdrawn(delta("2.0", "1.0"))],
            "1.0",
            None,
        ),
        (
            "a delta FROM the withdrawn version is how a device leaves it",
            [withdrawn(full("2.0")), full("3.0"), delta("3.0", "2.0")],
            "2.0",
            "edge-gw/3.0/delta-from-2.0.otd",
        ),
        (
            "only withdrawn versions: nothing published to install",
            [withdrawn(full("2.0"))],
            "1.0",
            None,
        ),
    ],
)
def test_a_withdrawn_version_is_never_started(
    name: str, targets: list[Candidate], installed: str, expect: str | None
) -> None:
    got = resolve(targets, facts(installed))
    if expect is None:
        assert isinstance(got, NothingToDo), got
        assert "withdrawn: bricks rev-B boards" in got.reason
    else:
        assert isinstance(got, UpdatePlan) and got.artifact.path == expect


def test_a_request_for_a_withdrawn_version_is_a_usage_error_naming_the_reason() -> None:
    targets = [full("1.0"), withdrawn(full("2.0"))]
    with pytest.raises(WithdrawnVersionError, match=r"2\.0 .* withdrawn .*: bricks rev-B") as e:
        resolve(targets, facts("1.0"), Policy(version=full("2.0").info.version))
    assert isinstance(e.value, NoSuchVersionError) and e.value.exit_code == 2


def test_the_withdrawn_schema_round_trips_as_2_0_and_live_targets_stay_1_1() -> None:
    info = dataclasses.replace(full("2.0").info, withdrawn=W)
    custom = info.to_custom()
    assert custom["otakit"]["schema"] == "2.0"
    assert custom["otakit"]["withdrawn"] == {"reason": W.reason, "time": W.time}
    assert ArtifactInfo.from_custom(custom) == info
    assert full("2.0").info.to_custom()["otakit"]["schema"] == "1.1"


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        {"reason": "", "time": W.time},
        {"reason": "x\x1b[2J", "time": W.time},  # a terminal escape in a device's status
        {"reason": "two\nlines", "time": W.time},
        {"reason": "x" * 501, "time": W.time},
        {"reason": "ok", "time": "2026-13-01T00:00:00Z"},
        {"reason": "ok", "time": "yesterday"},
        {"reason": "ok", "time": W.time, "by": "me"},
    ],
)
def test_a_malformed_withdrawal_is_a_schema_error(bad: object) -> None:
    custom = full("2.0").info.to_custom()
    custom["otakit"]["withdrawn"] = bad
    with pytest.raises(ArtifactSchemaError, match="withdrawn"):
        ArtifactInfo.from_custom(custom)


def test_an_old_device_skips_a_withdrawn_target_instead_of_installing_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a device from before schema 2.0 does: it reads major 1 only, so the withdrawn
    target is ignored (logged), exactly as if it were not listed."""
    import verifier.artifact as artifact

    info = dataclasses.replace(full("2.0").info, withdrawn=W)
    tf = TargetFile(900, {"sha256": "ab" * 32}, "edge-gw/2.0/full.img.zst")
    tf.unrecognized_fields["custom"] = info.to_custom()
    assert candidate(tf) is not None  # this device reads it (and resolve never starts it)
    monkeypatch.setattr(artifact, "SCHEMA_MAJORS", (1,))  # the old reader
    with caplog.at_level(logging.WARNING):
        assert candidate(tf) is None
    assert "ignoring target edge-gw/2.0/full.img.zst" in caplog.text
