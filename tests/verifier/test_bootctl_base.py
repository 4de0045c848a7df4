"""The shared boot-control transitions (pure), which every backend and simulation relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.bootctl.base import (
    MAX_TRIES,
    BootState,
    after_boot,
    committed,
    marked_bad,
    with_trial,
)
from verifier.errors import BootControlError

slots = st.sampled_from(["a", "b"])


@st.composite
def states(draw: st.DrawFn) -> BootState:
    trial = draw(st.one_of(st.none(), slots))
    return BootState(
        draw(slots), draw(slots), trial, draw(st.integers(0, MAX_TRIES)) if trial else 0
    )


@given(st.integers(1, MAX_TRIES))
def test_a_trial_gets_exactly_its_tries_then_falls_back_for_good(tries: int) -> None:
    s = with_trial(BootState("a", "a", None, 0), "b", tries)
    booted = []
    for _ in range(tries + 3):
        s = after_boot(s)
        booted.append(s.booted)
    assert booted == ["b"] * tries + ["a"] * 3
    assert s == BootState("a", "a", None, 0)


@given(states(), slots)
def test_mark_bad_never_leaves_the_slot_bootable(s: BootState, slot: str) -> None:
    new = marked_bad(s, slot)  # type: ignore[arg-type]
    assert new.trial != slot and new.primary != slot
    assert after_boot(new).booted != slot


@given(states())
def test_commit_makes_the_running_slot_the_only_one_booted(s: BootState) -> None:
    new = committed(s, s.booted)
    assert (new.primary, new.trial) == (s.booted, None)
    assert after_boot(after_boot(new)).booted == s.booted


@given(states(), st.integers(1, MAX_TRIES))
def test_a_trial_never_targets_the_running_slot(s: BootState, tries: int) -> None:
    with pytest.raises(BootControlError):
        with_trial(s, s.booted, tries)


def test_only_the_booted_slot_can_be_committed() -> None:
    with pytest.raises(BootControlError, match="booted is a, asked b"):
        committed(BootState("a", "a", "b", 3), "b")
