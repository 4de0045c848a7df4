"""Schema 3.0 (issue 11): a rollout policy and a recall are read strictly, written as 3.0
only when present, and a 2.x reader skips such a target instead of ignoring its waves."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest
from tuf.api.metadata import TargetFile

from tests.verifier.test_plan import full
from verifier.artifact import ArtifactInfo, Withdrawal
from verifier.errors import ArtifactSchemaError
from verifier.rollout import RolloutPolicy, Wave
from verifier.tuf.client import candidate

POLICY = RolloutPolicy(
    datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
    (Wave(500, timedelta(0)), Wave(10_000, timedelta(days=3))),
)
RECALL = Withdrawal("boot loop on rev-B", "2026-12-02T01:00:00Z", recall=True)


@pytest.mark.parametrize(
    ("change", "schema"),
    [
        ({}, "1.1"),
        ({"withdrawn": Withdrawal("bad", "2026-12-02T01:00:00Z")}, "2.0"),
        ({"rollout": POLICY}, "3.0"),
        ({"withdrawn": RECALL}, "3.0"),
        ({"rollout": dataclasses.replace(POLICY, halted=True), "withdrawn": RECALL}, "3.0"),
    ],
)
def test_each_target_is_written_in_the_oldest_schema_that_says_all_of_it(
    change: dict[str, object], schema: str
) -> None:
    info = dataclasses.replace(full("2.0").info, **change)
    custom = info.to_custom()
    assert custom["otakit"]["schema"] == schema
    assert ArtifactInfo.from_custom(custom) == info


def test_a_recall_is_a_withdrawal_that_says_so() -> None:
    info = dataclasses.replace(full("2.0").info, withdrawn=RECALL)
    assert info.recalled and info.withdrawn is not None
    assert info.to_custom()["otakit"]["withdrawn"]["recall"] is True
    plain = dataclasses.replace(info, withdrawn=dataclasses.replace(RECALL, recall=False))
    assert not plain.recalled and "recall" not in plain.to_custom()["otakit"]["withdrawn"]


@pytest.mark.parametrize(
    ("field", "bad", "match"),
    [
        ("withdrawn", {"reason": "x", "time": RECALL.time, "recall": "yes"}, "withdrawn.recall"),
        ("withdrawn", {"reason": "x", "time": RECALL.time, "recall": 1}, "withdrawn.recall"),
        ("rollout", {"start": "2026-12-01T06:00:00Z", "waves": []}, "rollout.waves"),
        ("rollout", "5%@0", "rollout"),
        ("rollout", {**POLICY.to_dict(), "pause": True}, "unexpected fields"),
    ],
)
def test_a_malformed_fleet_control_is_a_schema_error(field: str, bad: object, match: str) -> None:
    custom = full("2.0").info.to_custom()
    custom["otakit"]["schema"] = "3.0"
    custom["otakit"][field] = bad
    with pytest.raises(ArtifactSchemaError, match=match):
        ArtifactInfo.from_custom(custom)


def test_a_rollout_on_a_1_x_target_is_honoured_too() -> None:
    """The strictest reading wins: a halt written under the wrong schema still halts."""
    custom = full("2.0").info.to_custom()
    custom["otakit"]["rollout"] = dataclasses.replace(POLICY, halted=True).to_dict()
    info = ArtifactInfo.from_custom(custom)
    assert info.rollout is not None and info.rollout.halted


def test_a_2_x_device_skips_a_wave_controlled_target(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import verifier.artifact as artifact

    info = dataclasses.replace(full("2.0").info, rollout=POLICY)
    tf = TargetFile(900, {"sha256": "ab" * 32}, "edge-gw/2.0/full.img.zst")
    tf.unrecognized_fields["custom"] = info.to_custom()
    assert candidate(tf) is not None
    monkeypatch.setattr(artifact, "SCHEMA_MAJORS", (1, 2))  # a device from before issue 11
    with caplog.at_level(logging.WARNING):
        assert candidate(tf) is None
    assert "ignoring target edge-gw/2.0/full.img.zst" in caplog.text
