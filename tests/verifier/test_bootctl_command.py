"""CommandBootControl with the example handler from docs/boot and with broken handlers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers_bootctl import DOCS_BOOT, write_cmdline
from verifier.bootctl.base import BootState, after_boot
from verifier.bootctl.command import CommandBootControl
from verifier.errors import BootControlError

HANDLER = DOCS_BOOT / "bootctl-handler.sh"


def _boot(bc: CommandBootControl, state: Path) -> BootState:
    """Play the bootloader the example handler describes, on its files."""
    st = after_boot(bc.read())
    (state / "primary").write_text(st.primary + "\n")
    (state / "trial").write_text((st.trial or "") + "\n")
    (state / "tries").write_text(f"{st.tries_left}\n")
    assert bc.cmdline is not None
    write_cmdline(bc.cmdline, st.booted)
    return bc.read()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "boot state"  # a space: arguments are never re-parsed by a shell
    d.mkdir()
    (d / "primary").write_text("a\n")
    write_cmdline(tmp_path / "cmdline", "a")
    return d


@pytest.fixture
def bc(state: Path) -> CommandBootControl:
    return CommandBootControl(["sh", str(HANDLER), str(state)], cmdline=state.parent / "cmdline")


def _script(tmp_path: Path, body: str) -> list[str]:
    p = tmp_path / "handler.sh"
    p.write_text("#!/bin/sh\n" + body)
    return ["sh", str(p)]


def test_read(bc: CommandBootControl) -> None:
    assert bc.read() == BootState("a", "a", None, 0)


def test_trial_commit_cycle(bc: CommandBootControl, state: Path) -> None:
    bc.set_trial("b", 3)
    assert bc.read() == BootState("a", "a", "b", 3)
    assert _boot(bc, state) == BootState("b", "a", "b", 2)
    bc.mark_good("b")
    assert bc.read() == BootState("b", "b", None, 0)


def test_never_confirmed_trial_rolls_back(bc: CommandBootControl, state: Path) -> None:
    bc.set_trial("b", 2)
    assert [_boot(bc, state).booted for _ in range(4)] == ["b", "b", "a", "a"]
    assert bc.read() == BootState("a", "a", None, 0)


def test_mark_bad(bc: CommandBootControl, state: Path) -> None:
    bc.set_trial("b", 2)
    bc.mark_bad("b")
    assert bc.read() == BootState("a", "a", None, 0)
    bc.mark_bad("a")  # the running, committed slot: the next boot goes to the other
    assert bc.read() == BootState("a", "b", None, 0)


def test_refusals_happen_before_the_handler_is_called(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    argv = _script(
        tmp_path,
        f'echo "$@" >> "{log}"\n'
        'case "$1" in get-primary) echo a;; get-trial) echo none;; *) exit 0;; esac\n',
    )
    write_cmdline(tmp_path / "cmdline", "a")
    bc = CommandBootControl(argv, cmdline=tmp_path / "cmdline")
    with pytest.raises(BootControlError, match="booted slot a"):
        bc.set_trial("a", 3)
    with pytest.raises(BootControlError, match="only the booted slot"):
        bc.mark_good("b")
    assert "set-" not in log.read_text()


def test_handler_failure_shows_its_stderr(tmp_path: Path) -> None:
    argv = _script(tmp_path, 'echo "bootloader env locked by another process" >&2\nexit 7\n')
    bc = CommandBootControl(argv, cmdline=None)
    with pytest.raises(BootControlError) as e:
        bc.read()
    assert "exited with status 7, expected 0: bootloader env locked by another process" in str(
        e.value
    )


def test_handler_timeout(tmp_path: Path) -> None:
    argv = _script(tmp_path, "exec sleep 5\n")
    bc = CommandBootControl(argv, cmdline=None, timeout=0.3)
    with pytest.raises(BootControlError, match=r"did not finish within 0\.3 s"):
        bc.read()


@pytest.mark.parametrize(
    ("trial_output", "message"),
    [
        ("b", "expected 'none' or 'SLOT TRIES'"),
        ("b 99", "expected 'none' or 'SLOT TRIES' with TRIES in 0..16, found 'b 99'"),
        ("c 2", "get-trial: expected 'a' or 'b', found 'c'"),
    ],
)
def test_garbage_output_is_an_error(tmp_path: Path, trial_output: str, message: str) -> None:
    argv = _script(
        tmp_path,
        'case "$1" in get-booted) echo a;; get-primary) echo a;;'
        f' get-trial) echo "{trial_output}";; esac\n',
    )
    with pytest.raises(BootControlError, match=re.escape(message)):
        CommandBootControl(argv, cmdline=None).read()


def test_handler_that_ignores_a_request_is_caught(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        'case "$1" in get-booted) echo a;; get-primary) echo a;; get-trial) echo none;;'
        " *) exit 0;; esac\n",
    )
    bc = CommandBootControl(argv, cmdline=None)
    with pytest.raises(BootControlError, match="expected the state to become"):
        bc.set_trial("b", 3)


def test_missing_handler(tmp_path: Path) -> None:
    bc = CommandBootControl([str(tmp_path / "nope")], cmdline=None)
    with pytest.raises(BootControlError, match="not found"):
        bc.read()
    with pytest.raises(BootControlError, match="expected a handler program"):
        CommandBootControl([])
