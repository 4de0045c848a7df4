"""Building each backend from a device configuration's option map (what the factory calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_bootctl import REPO_ROOT
from verifier.bootctl.command import CommandBootControl
from verifier.bootctl.grub import GrubBootControl
from verifier.bootctl.options import OPTIONS, REQUIRED
from verifier.bootctl.uboot import UBootBootControl
from verifier.effects import RealDisk
from verifier.errors import ConfigError, UsageError
from verifier.state import DeviceConfig


def test_grub_options(tmp_path: Path) -> None:
    bc = GrubBootControl.from_options(
        {"envfile": "/boot/efi/grubenv", "timeout": "5"}, RealDisk(), tmp_path
    )
    assert (bc.envfile, bc.cmdline, bc.timeout) == (
        Path("/boot/efi/grubenv"),
        Path("/proc/cmdline"),
        5.0,
    )
    assert GrubBootControl.from_options({}, RealDisk(), tmp_path).envfile == Path(
        "/boot/grub/grubenv"
    )


def test_uboot_options(tmp_path: Path) -> None:
    bc = UBootBootControl.from_options({"config": "/etc/fw_env.config"}, RealDisk(), tmp_path)
    assert bc.config == Path("/etc/fw_env.config")
    assert UBootBootControl.from_options({}, RealDisk(), tmp_path).config is None


def test_command_options_split_without_a_shell(tmp_path: Path) -> None:
    bc = CommandBootControl.from_options(
        {"handler": "/usr/lib/otakit/handler --env '/boot/my env'", "cmdline": "none"},
        RealDisk(),
        tmp_path,
    )
    assert bc.handler == ("/usr/lib/otakit/handler", "--env", "/boot/my env")
    assert bc.cmdline is None


@pytest.mark.parametrize(
    ("build", "options", "message"),
    [
        (GrubBootControl.from_options, {"envfiel": "x"}, "unknown options ['envfiel']"),
        (UBootBootControl.from_options, {"timeout": "0"}, "expected 0-600 seconds, found '0'"),
        (UBootBootControl.from_options, {"timeout": "soon"}, "found 'soon'"),
        (CommandBootControl.from_options, {}, "expected option handler=PROGRAM"),
        (CommandBootControl.from_options, {"handler": "'unclosed"}, "handler: No closing"),
    ],
)
def test_bad_options_are_config_errors(
    tmp_path: Path, build: object, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        build(options, RealDisk(), tmp_path)  # type: ignore[operator]
    assert message in e.value.message


@pytest.mark.parametrize(
    ("name", "options", "cls"),
    [
        ("grub", {"envfile": "/boot/grub/grubenv"}, GrubBootControl),
        ("uboot", {"config": "/etc/fw_env.config"}, UBootBootControl),
        ("command", {"handler": "/bin/true", "cmdline": "none"}, CommandBootControl),
    ],
)
def test_every_backend_is_reachable_by_name_from_a_device_config(
    tmp_path: Path, name: str, options: dict[str, str], cls: type
) -> None:
    from verifier.bootctl.factory import backend_names, make_boot_control

    assert set(backend_names()) == {"file", "grub", "uboot", "command"}
    assert isinstance(make_boot_control(name, options, RealDisk(), tmp_path), cls)


def test_an_unknown_backend_names_the_known_ones(tmp_path: Path) -> None:
    from verifier.bootctl.factory import make_boot_control

    with pytest.raises(ConfigError, match="expected one of command, file, grub, uboot"):
        make_boot_control("lilo", {}, RealDisk(), tmp_path)


# --- paths a device stores are absolute -------------------------------------------------------

#: What an option of each kind looks like when it is given relative (by mistake).
_RELATIVE = {
    "path": "rel/file",
    "cmdline": "rel/cmdline",
    "program": "bin/tool",
    "command": "bin/handler --state /boot/otakit-state",
}
_PATH_LIKE = [
    (backend, name, kind)
    for backend, spec in OPTIONS.items()
    for name, kind in spec.items()
    if kind != "seconds"
]


def _options(backend: str, **extra: str) -> dict[str, str]:
    """The backend's required options (absolute), overridden by ``extra``."""
    return {name: "/usr/lib/otakit/x" for name in REQUIRED.get(backend, {})} | extra


def _config(backend: str, options: dict[str, str]) -> DeviceConfig:
    return DeviceConfig(
        "http://updates.example/", "edge-gw", "rpi4", Path("/dev/a"), Path("/dev/b"), backend,
        tuple(sorted(options.items())),
    )  # fmt: skip


def test_the_option_table_covers_every_backend_and_every_path_kind() -> None:
    from verifier.bootctl.factory import backend_names

    assert set(OPTIONS) == set(backend_names())
    assert {kind for _, _, kind in _PATH_LIKE} == set(_RELATIVE)
    assert {(b, n) for b, n, _ in _PATH_LIKE} >= {
        ("file", "path"),
        ("grub", "envfile"),
        ("uboot", "config"),
        ("command", "handler"),
    }


@pytest.mark.parametrize(("backend", "name", "kind"), _PATH_LIKE)
def test_a_relative_path_option_is_refused_at_init(backend: str, name: str, kind: str) -> None:
    value = _RELATIVE[kind]
    given = value.split()[0]
    with pytest.raises(UsageError) as e:
        _config(backend, _options(backend, **{name: value}))
    msg = e.value.message
    assert f"boot backend {backend!r} option {name}" in msg
    assert f"expected an absolute path, found {given!r}" in msg
    assert f"did you mean {Path.cwd() / given}?" in msg


@pytest.mark.parametrize(("backend", "name", "kind"), _PATH_LIKE)
def test_a_stored_relative_path_option_is_refused_when_the_device_opens(
    tmp_path: Path, backend: str, name: str, kind: str
) -> None:
    """A config.json written by an older otakit (or edited by hand) with a relative path."""
    from verifier.bootctl.factory import make_boot_control
    from verifier.device import Device

    state = tmp_path / "state"
    state.mkdir()
    data = _config(backend, _options(backend)).to_dict()
    data["boot"]["options"][name] = _RELATIVE[kind]
    (state / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        Device.open(state, RealDisk())
    assert not isinstance(e.value, UsageError)
    assert f"option {name}: expected an absolute path" in e.value.message
    assert "did you mean" not in e.value.message  # this directory is not the one of init
    # and every backend's own builder refuses it too
    with pytest.raises(ConfigError):
        make_boot_control(backend, data["boot"]["options"], RealDisk(), state)


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        ("grub", {"editenv": "grub-editenv", "envfile": "/boot/efi/EFI/debian/grubenv"}),
        ("uboot", {"printenv": "/usr/bin/fw_printenv", "setenv": "fw_setenv"}),
        ("command", {"handler": "bootctl-handler /boot/otakit-state", "cmdline": "none"}),
        ("file", {"path": "/var/lib/otakit-boot.json"}),
    ],
)
def test_absolute_paths_and_programs_found_in_path_are_accepted(
    backend: str, options: dict[str, str]
) -> None:
    assert _config(backend, options).options == options


def test_a_relative_boot_option_via_the_cli_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "st"
    (tmp_path / "root.json").write_text("{}")
    r = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(state), "init",
         "--repo-url", "http://updates.example/", "--root", str(tmp_path / "root.json"),
         "--product", "edge-gw", "--slot-a", "/dev/a", "--slot-b", "/dev/b",
         "--installed-version", "1.0",
         "--boot-backend", "grub", "--boot-option", "envfile=rel/grubenv"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "option envfile: expected an absolute path, found 'rel/grubenv'" in r.stderr
    assert str(tmp_path / "rel" / "grubenv") in r.stderr  # the suggestion
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root.json"]


def test_every_backend_has_one_option_table_and_one_builder() -> None:
    """Two registries must name the same backends (a backend missing from either would pass
    ``init``'s option check and fail at the first boot-state read, or the reverse)."""
    from verifier.bootctl.factory import backend_names
    from verifier.bootctl.options import OPTIONS

    assert set(OPTIONS) == set(backend_names())
