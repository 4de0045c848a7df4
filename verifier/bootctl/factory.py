"""Build a boot-control backend from its configured name and options.

The device configuration names a backend ("file", "grub", "uboot", "command") and carries a
flat string->string option map for it. Each backend registers one constructor here, so the
CLI and the update pipeline never import a concrete backend.

Constructor contract: ``build(options, disk, state_dir) -> BootControl``. ``state_dir`` is
the device state directory, for backends that keep a file of their own (the ``file`` backend
keeps ``boot.json`` there unless ``path`` is given). Unknown options are refused by the
constructor so a typo in a device configuration is found at ``init``, not at the first reboot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from verifier.bootctl.base import BootControl
from verifier.bootctl.options import check_options
from verifier.effects import Disk
from verifier.errors import ConfigError

Builder = Callable[[Mapping[str, str], Disk, Path], BootControl]

_BUILDERS: dict[str, Builder] = {}


def register(name: str, builder: Builder) -> None:
    """Make backend ``name`` constructible (backends call this at import of this module)."""
    _BUILDERS[name] = builder


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def make_boot_control(
    name: str, options: Mapping[str, str], disk: Disk, state_dir: Path
) -> BootControl:
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(
            f"boot backend: expected one of {', '.join(backend_names())}, found {name!r}"
        )
    return builder(options, disk, state_dir)


def file_boot_path(options: Mapping[str, str], state_dir: Path) -> Path:
    """Where the ``file`` backend keeps its JSON boot state."""
    check_options(options, "file")
    return Path(options["path"]) if "path" in options else state_dir / "boot.json"


def _build_file(options: Mapping[str, str], disk: Disk, state_dir: Path) -> BootControl:
    from verifier.bootctl.file import FileBootControl

    return FileBootControl(file_boot_path(options, state_dir), disk)


def _build_grub(options: Mapping[str, str], disk: Disk, state_dir: Path) -> BootControl:
    from verifier.bootctl.grub import GrubBootControl

    return GrubBootControl.from_options(options, disk, state_dir)


def _build_uboot(options: Mapping[str, str], disk: Disk, state_dir: Path) -> BootControl:
    from verifier.bootctl.uboot import UBootBootControl

    return UBootBootControl.from_options(options, disk, state_dir)


def _build_command(options: Mapping[str, str], disk: Disk, state_dir: Path) -> BootControl:
    from verifier.bootctl.command import CommandBootControl

    return CommandBootControl.from_options(options, disk, state_dir)


# Backends are imported only when chosen: a device using one never loads the others.
register("file", _build_file)
register("grub", _build_grub)
register("uboot", _build_uboot)
register("command", _build_command)
