"""Building each backend from a device configuration's option map (what the factory calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.bootctl.command import CommandBootControl
from verifier.bootctl.grub import GrubBootControl
from verifier.bootctl.uboot import UBootBootControl
from verifier.effects import RealDisk
from verifier.errors import ConfigError


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
