"""Shared helpers for the boot-control tests: real-tool gating, fake kernel command lines and
bootloader simulations that play GRUB's and U-Boot's part on a reboot."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from verifier.bootctl.base import Slot

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_BOOT = REPO_ROOT / "docs" / "boot"


def require_tool(name: str) -> str:
    """Path of a system tool; skip without it, but fail in CI where it must be installed."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path


def write_cmdline(path: Path, slot: Slot) -> None:
    """What the bootloader hands the kernel: the tests' stand-in for /proc/cmdline."""
    path.write_text(f"BOOT_IMAGE=/boot/vmlinuz root=LABEL=rootfs_{slot} ro otakit.slot={slot}\n")


# --- GRUB ------------------------------------------------------------------------------------


def grub_snippet() -> str:
    return (DOCS_BOOT / "grub.cfg").read_text()


def snippet_try_regex(snippet: str) -> str:
    """The regular expression the snippet uses to spend one try (GRUB uses POSIX ERE; this
    pattern means the same in Python's re)."""
    m = re.search(r"regexp --set=1:otakit_tries '([^']+)'", snippet)
    assert m, "the grub.cfg snippet no longer spends tries with regexp --set=1:otakit_tries"
    return m.group(1)


def grub_list(envfile: Path) -> dict[str, str]:
    out = subprocess.run(
        ["grub-editenv", str(envfile), "list"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def grub_boot(envfile: Path, cmdline: Path) -> Slot:
    """Play the grub.cfg snippet's part on a reboot (its logic, its regexp, its save_env)."""
    env = grub_list(envfile)
    primary: Slot = "b" if env.get("otakit_primary") == "b" else "a"
    slot: Slot = primary
    trial = env.get("otakit_trial", "")
    if trial:
        m = re.match(snippet_try_regex(grub_snippet()), env.get("otakit_tries", ""))
        if m:
            assert trial in ("a", "b")
            slot = "a" if trial == "a" else "b"
            tries = m.group(1)
        else:
            trial, tries = "", ""
        # GRUB's save_env rewrites the block in place, as here.
        subprocess.run(
            ["grub-editenv", str(envfile), "set", f"otakit_trial={trial}", f"otakit_tries={tries}"],
            check=True,
        )
    write_cmdline(cmdline, slot)
    return slot


# --- U-Boot ----------------------------------------------------------------------------------

UBOOT_ENV_SIZE = 0x4000


def uboot_setup(directory: Path, *, primary: Slot = "a") -> Path:
    """Two file-backed copies of a redundant environment, initialised from the shipped
    docs/boot/uboot-env.txt with fw_setenv's own default-environment path. Returns the
    fw_env.config."""
    copies = [directory / "uboot.env", directory / "uboot-redund.env"]
    for c in copies:
        c.write_bytes(b"\0" * UBOOT_ENV_SIZE)
    config = directory / "fw_env.config"
    config.write_text("".join(f"{c} 0x0 {UBOOT_ENV_SIZE:#x}\n" for c in copies))
    subprocess.run(
        [
            "fw_setenv",
            "-c",
            str(config),
            "-f",
            str(DOCS_BOOT / "uboot-env.txt"),
            "otakit_primary",
            primary,
        ],
        check=True,
        capture_output=True,
    )
    # a second write so that both copies are valid, as on a device that has run for a while
    # (fw_setenv skips a write that changes nothing, hence two)
    for value in ("1", "0"):
        subprocess.run(["fw_setenv", "-c", str(config), "bootcount", value], check=True)
    return config


def uboot_copies(config: Path) -> list[Path]:
    return [Path(line.split()[0]) for line in config.read_text().splitlines() if line.strip()]


def uboot_printenv(config: Path) -> dict[str, str]:
    out = subprocess.run(
        ["fw_printenv", "-c", str(config)], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def uboot_save(config: Path, ram: dict[str, str]) -> None:
    """U-Boot's saveenv: the whole in-RAM environment replaces the stored one."""
    stored = uboot_printenv(config)
    script = "".join(f"{k}={ram.get(k, '')}\n" for k in sorted(set(stored) | set(ram)))
    subprocess.run(["fw_setenv", "-c", str(config), "-s", "-"], input=script.encode(), check=True)


class _Booted(Exception):
    def __init__(self, bootargs: str) -> None:
        self.bootargs = bootargs


class HushSubset:
    """Just enough of U-Boot's hush to run the shipped bootcmd/altbootcmd: ``;`` lists,
    ``if test A = B; then ...; else ...; fi``, ``setenv``, ``saveenv``, ``run``, ``load`` and
    ``booti``/``bootz``/``bootm``. Variables expand when a statement runs, as in hush. Anything
    else fails the test, so the shipped script stays within what is simulated."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.loads: list[str] = []

    def _expand(self, text: str) -> str:
        return re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: self.env.get(m.group(1), ""), text)

    @staticmethod
    def _statements(script: str) -> list[str]:
        out, cur, quoted = [], "", False
        for ch in script:
            if ch == '"':
                quoted = not quoted
            if ch == ";" and not quoted:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        out.append(cur.strip())
        return [s for s in out if s]

    def run(self, script: str, depth: int = 0) -> None:
        assert depth < 10, "run nesting too deep"
        # stack of (this branch runs, the if's condition, enclosing block runs)
        stack: list[tuple[bool, bool, bool]] = []
        for stmt in self._statements(script):
            word, _, rest = stmt.partition(" ")
            active = stack[-1][0] if stack else True
            if word == "if":
                words = shlex.split(self._expand(rest)) if active else []
                cond = active and len(words) == 4 and words[0] == "test" and words[2] == "="
                cond = cond and words[1] == words[3]
                stack.append((active and cond, cond, active))
                continue
            if word == "fi":
                stack.pop()
                continue
            if word == "else":
                _, cond, outer = stack.pop()
                stack.append((outer and not cond, cond, outer))
                stmt = rest
            elif word == "then":
                stmt = rest
            if not (stack[-1][0] if stack else True):
                continue
            self._command(shlex.split(self._expand(stmt)), depth)

    def _command(self, words: list[str], depth: int) -> None:
        cmd, args = words[0], words[1:]
        if cmd == "setenv":
            if len(args) == 1:
                self.env.pop(args[0], None)
            else:
                self.env[args[0]] = " ".join(args[1:])
        elif cmd == "saveenv":
            uboot_save(self.config, self.env)
        elif cmd == "run":
            for name in args:
                self.run(self.env[name], depth + 1)
        elif cmd == "load":
            self.loads.append(" ".join(args))
        elif cmd in ("booti", "bootz", "bootm"):
            raise _Booted(self.env.get("bootargs", ""))
        else:
            raise AssertionError(f"the simulated U-Boot does not know the command {cmd!r}")


def uboot_boot(config: Path, cmdline: Path) -> Slot:
    """Play U-Boot's part on a reboot: CONFIG_BOOTCOUNT_LIMIT with CONFIG_BOOTCOUNT_ENV, then
    the environment's own bootcmd or altbootcmd. Writes the kernel command line it boots with."""
    env = uboot_printenv(config)
    upgrade = env.get("upgrade_available", "0") not in ("", "0")
    bootcount = (int(env.get("bootcount", "0") or "0") if upgrade else 0) + 1
    env["bootcount"] = str(bootcount)
    if upgrade:  # bootcount_store() saves only while an upgrade is pending
        subprocess.run(["fw_setenv", "-c", str(config), "bootcount", str(bootcount)], check=True)
    bootlimit = int(env.get("bootlimit", "0") or "0")
    command = "altbootcmd" if bootlimit and bootcount > bootlimit else "bootcmd"
    hush = HushSubset(config, env)
    try:
        hush.run(env[command])
    except _Booted as b:
        cmdline.write_text(b.bootargs + "\n")
        m = re.search(r"\botakit\.slot=([ab])\b", b.bootargs)
        assert m, f"bootargs without otakit.slot: {b.bootargs!r}"
        return "a" if m.group(1) == "a" else "b"
    raise AssertionError(f"{command} returned without booting")


def uboot_copy_state(path: Path) -> tuple[bool, int]:
    """(CRC valid, flag byte) of one copy of a redundant environment:
    CRC32 (little endian) | flag | NUL-separated name=value pairs."""
    data = path.read_bytes()
    crc = int.from_bytes(data[:4], "little")
    return zlib.crc32(data[5:]) == crc, data[4]


def uboot_image(variables: dict[str, str], flag: int, size: int = UBOOT_ENV_SIZE) -> bytes:
    """Build one copy of a redundant environment ourselves, per libubootenv's format."""
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in variables.items()) + b"\0"
    body = body.ljust(size - 5, b"\0")
    return zlib.crc32(body).to_bytes(4, "little") + bytes([flag]) + body
