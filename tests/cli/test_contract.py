"""The CLI contract, as a table: every command of both CLIs with bad input.

Each row runs the real entry point twice: as text (exit code, one diagnostic line family on
stderr, nothing on stdout, no traceback) and with ``--json`` (exactly one JSON error object
on stdout with the same code). A test also walks both typer apps and fails when a command
has no row, so a new command cannot skip the contract. The exit-code and error-kind tables
in docs/CLI.md are checked against the code.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import typer.main

from tests.cli.conftest import World
from tests.cli.helpers_cli import DEMO_KEYS, ROOT, command, env, run
from verifier.cli_contract import EXIT_CODES
from verifier.errors import OtakitError

PROGS = ("otakit", "otakit-device")


@dataclass(frozen=True)
class Paths:
    """What a row may refer to: ``{name}`` placeholders in its argv."""

    values: dict[str, str]

    def fill(self, argv: tuple[str, ...]) -> list[str]:
        return [a.format(**self.values) for a in argv]


@pytest.fixture(scope="session")
def paths(world: World, served: str, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    d = tmp_path_factory.mktemp("contract")
    (d / "afile").write_text("a file, not a directory\n")
    (d / "not-json.json").write_text("this is not json\n")
    keys_dir = d / "demo-keys"
    shutil.copytree(DEMO_KEYS.parent, keys_dir)
    tampered = d / "tampered"
    shutil.copytree(world.repo_v1, tampered)
    ts = tampered / "metadata" / "timestamp.json"
    ts.write_text(ts.read_text().replace('"version": 2', '"version": 7', 1))
    slot_a, slot_b = d / "a.img", d / "b.img"
    shutil.copyfile(world.v1, slot_a)
    slot_b.write_bytes(b"\0" * world.v1.stat().st_size)
    root = world.repo_v2 / "metadata" / "1.root.json"
    r = run("otakit-device", "tuf", "--metadata-dir", str(d / "tuf"), "init", str(root))
    assert r.returncode == 0, r.stderr
    device, refused = d / "device", d / "refused"  # refused: its server refuses connections
    for state, url in ((device, served), (refused, "http://127.0.0.1:9/")):
        argv = [a.format(d=d, url=url, root=root, a=slot_a, b=slot_b) for a in INIT]
        r = run("otakit-device", "--state", str(state), *argv[2:])
        assert r.returncode == 0, r.stderr
    return Paths(
        {
            "d": str(d),
            "keys": str(DEMO_KEYS),
            "keysdir": str(keys_dir),
            "repo": str(world.repo_v1),
            "tampered": str(tampered),
            "img": str(world.v2),
            "v1": str(world.v1),
            "root": str(root),
            "url": served,
            "a": str(slot_a),
            "b": str(slot_b),
            "dev": str(device),
            "refused": str(refused),
            "nowhere": str(d / "nowhere"),
            "tuf": str(d / "tuf"),
        }
    )


@dataclass(frozen=True)
class Row:
    prog: str
    command: str  # the command path this row exercises, e.g. "repo init"
    argv: tuple[str, ...]
    code: int
    says: str  # a fragment the diagnostic must contain
    #: the family the diagnostic names when it is not the exit code's (``otakit-device tuf``
    #: exits 1 for every failure, docs/CLI.md)
    family: str = ""

    @property
    def expected_family(self) -> str:
        return self.family or _FAMILIES[self.code]


INIT = (
    "--state",
    "{d}/new-device",
    "init",
    "--repo-url",
    "{url}",
    "--root",
    "{root}",
    "--product",
    "edge-gw",
    "--slot-a",
    "{a}",
    "--slot-b",
    "{b}",
    "--installed-version",
    "1.0",
)


def _init(*replace: tuple[str, str]) -> tuple[str, ...]:
    argv = list(INIT)
    for option, value in replace:
        argv[argv.index(option) + 1] = value
    return tuple(argv)


def _rel(*argv: str) -> tuple[str, ...]:
    return ("release", "{repo}", *argv)


P, D = "otakit", "otakit-device"
KEYS = ("--keys", "{keys}")
REL = ("--product", "edge-gw", "--hardware", "board")
TUF_META = ("--metadata-url", "{url}/metadata/")
TUF = (*TUF_META, "--metadata-dir", "{tuf}")
TUF_NEW = ("--metadata-dir", "{d}/tuf-new")
TUF_TARGETS = ("--target-base-url", "{url}/targets/", "--target-dir", "{d}/tuf-targets")
ROWS = [
    # --- publisher ---------------------------------------------------------------------------
    Row(P, "", ("bogus",), 2, "No such command"),
    Row(P, "repo", ("repo", "bogus"), 2, "No such command"),
    Row(P, "repo init", ("repo", "init", "{d}/afile/sub/repo", *KEYS), 5, "Not a directory"),
    Row(P, "repo init", ("repo", "init", "{d}/r1", "--keys", "{d}/missing.json"), 5, "missing"),
    Row(P, "repo init", ("repo", "init", "{d}/r2", "--keys", "{d}/not-json.json"), 2, "json"),
    Row(P, "repo init", ("repo", "init", "{d}/r3"), 2, "Missing option '--keys'"),
    Row(P, "repo serve", ("repo", "serve", "{nowhere}"), 5, "repository"),
    Row(P, "repo serve", ("repo", "serve", "{repo}", "--port", "70000"), 2, "--port"),
    Row(P, "repo list", ("repo", "list", "{nowhere}"), 5, "repository"),
    Row(P, "repo list", ("repo", "list", "{tampered}"), 3, "timestamp"),
    Row(P, "repo refresh", ("repo", "refresh", "{nowhere}", *KEYS), 5, "repository"),
    Row(P, "repo refresh", ("repo", "refresh", "{repo}", *KEYS, "--within", "-1"), 2, "within"),
    Row(P, "repo status", ("repo", "status", "{nowhere}"), 5, "repository"),
    Row(P, "repo status", ("repo", "status", "{tampered}"), 3, "timestamp"),
    Row(P, "repo status", ("repo", "status", "{repo}", "--warn-days", "x"), 2, "warn-days"),
    Row(
        P,
        "repo rotate-root",
        ("repo", "rotate-root", "{repo}", "--old-keys", "{keys}"),
        2,
        "--new-keys",
    ),
    Row(
        P,
        "repo rotate-root",
        ("repo", "rotate-root", "{nowhere}", "--old-keys", "{keys}", "--new-keys", "{keys}"),
        5,
        "repository",
    ),
    Row(P, "keys", ("keys",), 2, "Usage"),
    Row(P, "keys generate-demo", ("keys", "generate-demo"), 2, "Missing argument"),
    Row(P, "keys generate-demo", ("keys", "generate-demo", "{keysdir}"), 5, "--force"),
    Row(
        P, "release", _rel("/etc/passwd", *KEYS, *REL, "--version", "3.0"), 2, "no known filesystem"
    ),
    Row(P, "release", _rel("{img}", *KEYS, *REL, "--version", "1.0-rc1"), 2, "version"),
    Row(P, "release", _rel("{img}", *KEYS, *REL, "--version", "0.9"), 2, "newer"),
    Row(P, "release", _rel("{nowhere}", *KEYS, *REL, "--version", "3.0"), 5, "nowhere"),
    Row(
        P, "release", _rel("{img}", *KEYS, *REL, "--version", "3.0", "--level", "99"), 2, "--level"
    ),
    Row(
        P,
        "release",
        _rel("{img}", *KEYS, *REL, "--version", "3.0", "--image-type", "ext5"),
        2,
        "ext5",
    ),
    Row(
        P,
        "release",
        ("release", "{tampered}", "{img}", *KEYS, *REL, "--version", "3.0"),
        3,
        "timestamp",
    ),
    Row(P, "delta", ("delta",), 2, "Usage"),
    Row(
        P,
        "delta create",
        ("delta", "create", "/nonexistent/a", "{img}", "{d}/out"),
        5,
        "/nonexistent/a",
    ),
    Row(
        P,
        "delta create",
        ("delta", "create", "{v1}", "{img}", "{d}/o", "--level", "0"),
        2,
        "--level",
    ),
    Row(
        P,
        "delta apply",
        ("delta", "apply", "{v1}", "/etc/passwd", "{d}/out2"),
        2,
        "expected a delta container",
    ),
    Row(
        P,
        "delta apply",
        ("delta", "apply", "{v1}", "/nonexistent/d", "{d}/out3"),
        5,
        "/nonexistent/d",
    ),
    Row(P, "demo", ("demo", "--workdir", "{d}/afile/x"), 5, "afile"),
    Row(P, "inspect", ("inspect", "{nowhere}", "--root", "{root}"), 5, "repository"),
    Row(P, "inspect", ("inspect", "{repo}"), 2, "Missing option '--root'"),
    Row(P, "inspect", ("inspect", "{repo}", "--root", "{d}/not-json.json"), 2, "not a TUF root"),
    Row(P, "inspect", ("inspect", "{repo}", "--root", "{nowhere}/root.json"), 5, "root.json"),
    Row(P, "inspect", ("inspect", "{repo}", "--root", "{root}", "--at", "soon"), 2, "--at"),
    Row(P, "inspect", ("inspect", "{repo}", "--root", "{root}", "--fail-on", "x"), 2, "--fail-on"),
    Row(P, "inspect diff", ("inspect", "diff", "--root", "{root}"), 2, "Missing argument"),
    Row(P, "inspect", ("inspect", "ftp://host/r", "--root", "{root}"), 2, "http"),
    Row(P, "inspect", ("inspect", "http://127.0.0.1:9", "--root", "{root}"), 4, "refused"),
    Row(P, "image", ("image",), 2, "Usage"),
    Row(P, "image diff", ("image", "diff", "{nowhere}", "{img}"), 5, "nowhere"),
    Row(P, "image diff", ("image", "diff", "{img}"), 2, "Missing argument"),
    Row(P, "image diff", ("image", "diff", "{d}", "/etc/passwd"), 2, "cannot compare a directory"),
    Row(P, "image diff", ("image", "diff", "{img}", "{v1}", "--limit", "-1"), 2, "--limit"),
    # --- device ------------------------------------------------------------------------------
    Row(D, "", ("bogus",), 2, "No such command"),
    Row(D, "init", _init(("--slot-a", "dev/a.img")), 2, "absolute"),
    Row(D, "init", _init(("--root", "/etc/passwd")), 2, "not a TUF root"),
    Row(D, "init", _init(("--root", "{nowhere}/root.json")), 5, "root.json"),
    Row(D, "init", _init(("--installed-version", "1.0-rc1")), 2, "--installed-version"),
    Row(D, "init", (*INIT, "--tries", "0"), 2, "--tries"),
    Row(D, "init", (*INIT, "--boot-backend", "lilo"), 2, "boot backend: expected one of"),
    Row(D, "init", (*INIT, "--boot-option", "novalue"), 2, "KEY=VALUE"),
    Row(D, "init", (*INIT, "--image-type", "ext5"), 2, "ext5"),
    Row(D, "init", _init(("--repo-url", "ftp://example/")), 2, "http"),
    Row(D, "init", ("--state", "{dev}", *INIT[2:]), 5, "already initialized"),
    Row(D, "update", ("--state", "{nowhere}", "update"), 5, "init"),
    Row(D, "update", ("--state", "{dev}", "update", "--tries", "0"), 2, "--tries"),
    Row(D, "update", ("--state", "{dev}", "update", "--mode", "fast"), 2, "--mode"),
    Row(D, "update", ("--state", "{dev}", "update", "--version", "7.7"), 2, "not published"),
    Row(D, "update", ("--state", "{dev}", "update", "--version", "x.y"), 2, "--version"),
    # --now: the text and the JSON run share the device, and the first one starts a backoff
    Row(D, "update", ("--state", "{refused}", "update", "--now"), 4, "connection refused"),
    Row(D, "status", ("--state", "{nowhere}", "status"), 5, "init"),
    Row(D, "report", ("--state", "{nowhere}", "report"), 5, "init"),
    Row(D, "mark-good", ("--state", "{nowhere}", "mark-good"), 5, "init"),
    Row(D, "mark-bad", ("--state", "{dev}", "mark-bad", "c"), 2, "'c' is not one of"),
    Row(D, "mark-bad", ("--state", "{dev}", "mark-bad"), 2, "Missing argument"),
    Row(D, "rollback", ("--state", "{nowhere}", "rollback"), 5, "init"),
    Row(D, "clear-failed", ("--state", "{nowhere}", "clear-failed"), 5, "init"),
    Row(D, "boot", ("--state", "{nowhere}", "boot"), 5, "init"),
    Row(D, "verify-installed", ("--state", "{nowhere}", "verify-installed"), 5, "init"),
    # --- otakit inspect show / diff / history ------------------------------------------------
    Row(P, "inspect show", ("inspect", "show", "{nowhere}", "--root", "{root}"), 5, "repository"),
    Row(
        P, "inspect show", ("inspect", "show", "{repo}@targets:x", "--root", "{root}"), 2, "version"
    ),
    Row(P, "inspect diff", ("inspect", "diff", "{repo}", "{repo}"), 2, "Missing option '--root'"),
    Row(
        P,
        "inspect diff",
        ("inspect", "diff", "{repo}@nope:1", "{repo}", "--root", "{root}"),
        2,
        "ROLE one of",
    ),
    Row(
        P,
        "inspect diff",
        ("inspect", "diff", "{repo}@targets:99", "{repo}", "--root", "{root}"),
        2,
        "99.targets.json",
    ),
    Row(
        P,
        "inspect diff",
        ("inspect", "diff", "{repo}", "{nowhere}", "--root", "{root}"),
        5,
        "nowhere",
    ),
    Row(
        P,
        "inspect diff",
        ("inspect", "diff", "{repo}", "http://127.0.0.1:9", "--root", "{root}"),
        4,
        "refused",
    ),
    Row(
        P, "inspect history", ("inspect", "history", "{nowhere}", "--root", "{root}"), 5, "nowhere"
    ),
    Row(P, "inspect history", ("inspect", "history", "{repo}"), 2, "Missing option '--root'"),
    Row(
        P,
        "inspect history",
        ("inspect", "history", "{repo}", "--root", "{d}/not-json.json"),
        2,
        "not a TUF root",
    ),
    # --- device: the standalone TUF client exits 1 on any failure (docs/CLI.md) ---------------
    Row(D, "tuf", ("tuf",), 1, "Usage", "usage"),
    Row(D, "tuf", ("tuf", "--metadata-dir", "{tuf}", "bogus"), 1, "No such command", "usage"),
    Row(D, "tuf init", ("tuf", "init", "{root}"), 1, "--metadata-dir", "usage"),
    Row(D, "tuf init", ("tuf", *TUF_NEW, "init", "/etc/passwd"), 1, "not a TUF root", "usage"),
    Row(D, "tuf init", ("tuf", *TUF_NEW, "init", "{nowhere}/root.json"), 1, "root.json", "local"),
    Row(D, "tuf init", ("tuf", "--metadata-dir", "{tuf}", "init", "{root}"), 1, "already", "local"),
    Row(
        D,
        "tuf refresh",
        ("tuf", "--metadata-dir", "{tuf}", "refresh"),
        1,
        "--metadata-url",
        "usage",
    ),
    Row(
        D,
        "tuf refresh",
        ("tuf", *TUF_META, "--metadata-dir", "{nowhere}", "refresh"),
        1,
        "init",
        "local",
    ),
    Row(
        D,
        "tuf refresh",
        ("tuf", "--metadata-url", "http://127.0.0.1:9/", "--metadata-dir", "{tuf}", "refresh"),
        1,
        "connection refused",
        "transport",
    ),
    Row(D, "tuf download", ("tuf", *TUF, "download"), 1, "--target-base-url", "usage"),
    Row(
        D,
        "tuf download",
        ("tuf", *TUF, *TUF_TARGETS, "--target-name", "no/such.img", "download"),
        1,
        "no/such.img",
        "usage",
    ),
    Row(D, "update", ("--state", "{dev}", "update", "--read-timeout", "0"), 2, "--read-timeout"),
    Row(D, "update", ("--state", "{dev}", "update", "--min-throughput", "-1"), 2, "bytes/s"),
    Row(
        D, "update", ("--state", "{dev}", "update", "--cycle-deadline", "x"), 2, "--cycle-deadline"
    ),
    Row(P, "image diff", ("image", "diff", "{img}", "{v1}", "--tool-timeout", "0"), 2, "timeout"),
    Row(P, "image diff", ("image", "diff", "{img}", "{v1}", "--tool-timeout", "x"), 2, "timeout"),
    Row(P, "fleet", ("fleet", "bogus"), 2, "No such command"),
    Row(P, "fleet simulate", ("fleet", "simulate", "--fault", "meteor=0.1"), 2, "KIND=SHARE"),
    Row(P, "fleet simulate", ("fleet", "simulate", "--fault", "offline=2"), 2, "SHARE in 0..1"),
    Row(P, "fleet simulate", ("fleet", "simulate", "--devices", "0"), 2, "--devices"),
    Row(
        P,
        "fleet simulate",
        ("fleet", "simulate", "--fault", "offline=0.6", "--fault", "power-cut=0.6"),
        2,
        "sum at most 1",
    ),
    # --- ceremonies (repo stage / sign / sign-status / publish) ----------------------------
    Row(
        P,
        "repo stage",
        ("repo", "stage", "{repo}", "snapshot", "--out", "{d}/s.json"),
        2,
        "root or",
    ),
    Row(P, "repo stage", ("repo", "stage", "{repo}", "root", "--out", "{d}/s.json"), 2, "--keys"),
    Row(
        P, "repo stage", ("repo", "stage", "{nowhere}", "targets", "--out", "{d}/s.json"), 5, "repo"
    ),
    Row(
        P,
        "repo stage",
        ("repo", "stage", "{tampered}", "targets", "--out", "{d}/s.json"),
        3,
        "time",
    ),
    Row(P, "repo sign", ("repo", "sign", "{d}/missing.json", "--key", "file2:x"), 5, "cannot read"),
    Row(P, "repo sign", ("repo", "sign", "{keys}", "--key", "file2:x"), 2, "staged change"),
    Row(P, "repo sign", ("repo", "sign", "{keys}"), 2, "Missing option '--key'"),
    Row(P, "repo sign-status", ("repo", "sign-status", "{keys}"), 2, "staged change"),
    Row(P, "repo sign-status", ("repo", "sign-status", "{nowhere}"), 5, "cannot read"),
    Row(P, "repo publish", ("repo", "publish", "{keys}", "{repo}", *KEYS), 2, "staged change"),
    Row(P, "repo publish", ("repo", "publish", "{keys}", "{repo}"), 2, "Missing option '--keys'"),
    Row(P, "keys generate", ("keys", "generate"), 2, "Missing option '--out'"),
    Row(P, "keys generate", ("keys", "generate", "--out", "{keysdir}/keys.json"), 5, "overwritten"),
    Row(
        P, "keys generate", ("keys", "generate", "--out", "{d}/k.pem", "--type", "dsa"), 2, "--type"
    ),
    Row(
        P,
        "keys generate",
        ("keys", "generate", "--out", "{d}/k.pem", "--passphrase-prompt"),
        2,
        "expected a terminal",
    ),
    Row(
        P,
        "keys generate",
        ("keys", "generate", "--out", "{d}/k.pem", "--passphrase", "x"),
        2,
        "--passphrase",
    ),
    Row(P, "keys import-hsm", ("keys", "import-hsm"), 2, "found neither"),
    Row(
        P,
        "keys import-hsm",
        ("keys", "import-hsm", "--uri", "pkcs11:object=k?pin-value=1234"),
        2,
        "PIN is never taken",
    ),
    Row(
        P, "keys import-hsm", ("keys", "import-hsm", "--uri", "pkcs11:token=t"), 2, "found neither"
    ),
    Row(P, "withdraw", ("withdraw", "{repo}", "edge-gw", "9.0", *KEYS, "--reason", "x"), 2, "9.0"),
    Row(
        P, "withdraw", ("withdraw", "{repo}", "edge-gw", "1.0", *KEYS, "--reason", ""), 2, "reason"
    ),
    Row(P, "withdraw", ("withdraw", "{repo}", "edge-gw", "1.0", *KEYS), 2, "Missing option"),
    Row(
        P,
        "withdraw",
        ("withdraw", "{nowhere}", "e", "1.0", *KEYS, "--reason", "x"),
        5,
        "repository",
    ),
    Row(P, "repo prune", ("repo", "prune", "{repo}", *KEYS, "--keep", "0"), 2, "--keep"),
    Row(P, "repo prune", ("repo", "prune", "{nowhere}", *KEYS, "--keep", "1"), 5, "repository"),
    Row(P, "repo delegate", ("repo", "delegate", "{repo}", "edge-gw", *KEYS), 2, "--product-keys"),
    Row(
        P,
        "repo delegate",
        ("repo", "delegate", "{repo}", "edge-gw", *KEYS, "--product-keys", "{d}/missing.json"),
        5,
        "role key file",
    ),
    Row(
        P,
        "repo delegate",
        ("repo", "delegate", "{repo}", "edge-gw", *KEYS, "--product-keys", "{keys}"),
        2,
        "otakit_role_keys",
    ),
    Row(
        P,
        "release",
        _rel("{img}", *KEYS, *REL, "--version", "3.0", "--product-keys", "{keys}"),
        2,
        "otakit_role_keys",
    ),
    Row(
        P,
        "repo delegate",
        ("repo", "delegate", "{repo}", "edge-gw", "--product-keys", "{keys}", "--stage"),
        2,
        "--stage --out",
    ),
    Row(
        P,
        "repo prune",
        ("repo", "prune", "{repo}", *KEYS, "--keep", "1", "--product-keys", "{keys}"),
        2,
        "PRODUCT=ROLEKEYS",
    ),
    # --- staged rollouts (issue 11): rollout ..., fleet collect, report --post ----------------
    Row(P, "rollout", ("rollout", "bogus"), 2, "No such command"),
    Row(P, "rollout status", ("rollout", "status", "{nowhere}", "edge-gw", "1.0"), 5, "repository"),
    Row(P, "rollout status", ("rollout", "status", "{tampered}", "edge-gw", "1.0"), 3, "timestamp"),
    Row(P, "rollout status", ("rollout", "status", "{repo}", "edge-gw", "9.0"), 2, "9.0"),
    Row(P, "rollout halt", ("rollout", "halt", "{repo}", "edge-gw", "9.0", *KEYS), 2, "9.0"),
    Row(P, "rollout halt", ("rollout", "halt", "{repo}", "edge-gw", "1.0"), 2, "--keys"),
    Row(
        P, "rollout resume", ("rollout", "resume", "{nowhere}", "e", "1.0", *KEYS), 5, "repository"
    ),
    Row(
        P,
        "rollout advance",
        ("rollout", "advance", "{repo}", "edge-gw", "1.0", *KEYS, "--to", "0%"),
        2,
        "--to",
    ),
    Row(
        P,
        "rollout advance",
        ("rollout", "advance", "{repo}", "edge-gw", "1.0", *KEYS),
        2,
        "no rollout policy",
    ),
    Row(
        P, "rollout recall", ("rollout", "recall", "{repo}", "edge-gw", "1.0", *KEYS), 2, "--reason"
    ),
    Row(
        P,
        "rollout gate",
        (
            "rollout",
            "gate",
            "{repo}",
            "edge-gw",
            "1.0",
            *KEYS,
            "--reports",
            "{d}",
            "--max-failure-rate",
            "5",
        ),
        2,
        "--max-failure-rate",
    ),
    Row(
        P,
        "rollout gate",
        (
            "rollout",
            "gate",
            "{repo}",
            "edge-gw",
            "1.0",
            *KEYS,
            "--reports",
            "{d}",
            "--max-failure-rate",
            "0.1",
            "--action",
            "explode",
        ),
        2,
        "--action",
    ),
    Row(
        P,
        "rollout gate",
        (
            "rollout",
            "gate",
            "{repo}",
            "edge-gw",
            "1.0",
            *KEYS,
            "--reports",
            "{nowhere}",
            "--max-failure-rate",
            "0.1",
        ),
        5,
        "cannot list",
    ),
    Row(P, "fleet collect", ("fleet", "collect"), 2, "Missing option '--dir'"),
    Row(P, "fleet collect", ("fleet", "collect", "--dir", "{d}/afile"), 5, "afile"),
    Row(P, "fleet collect", ("fleet", "collect", "--dir", "{d}/c", "--port", "70000"), 2, "--port"),
    Row(
        D,
        "report",
        ("--state", "{dev}", "report", "--post", "ftp://x/report", "--device-id", "gw-1"),
        2,
        "http",
    ),
    Row(
        D,
        "report",
        ("--state", "{dev}", "report", "--post", "http://127.0.0.1:9/r", "--device-id", "gw-1"),
        4,
        "connection refused",
    ),
    Row(D, "report", ("--state", "{dev}", "report", "--device-id", "../x"), 2, "--device-id"),
    Row(P, "release-file", ("release-file", "{repo}", "{v1}", *KEYS), 2, "Missing option '--name'"),
    Row(
        P,
        "release-file",
        ("release-file", "{repo}", "{v1}", *KEYS, "--name", "x/y", "--custom", '{{"otakit": 1}}'),
        2,
        "reserved for images",
    ),
    Row(
        P,
        "release-file",
        ("release-file", "{nowhere}", "{v1}", *KEYS, "--name", "x/y"),
        5,
        "nowhere",
    ),
    Row(
        P,
        "export",
        ("export", "{repo}", "{d}/exp", *KEYS, "--product", "edge-gw", "--valid-for", "91d"),
        2,
        "90 days",
    ),
    Row(P, "export", ("export", "{repo}", "{repo}", *KEYS, "--product", "edge-gw"), 2, "already"),
    Row(P, "inspect export", ("inspect", "export", "{nowhere}"), 4, "mounted"),
    Row(D, "fetch", ("--state", "{dev}", "fetch", "x/none.bin"), 2, "Missing option '--out'"),
    Row(D, "fetch", ("--state", "{dev}", "fetch", "x/none.bin", "--out", "{d}/f"), 2, "not signed"),
    Row(D, "fetch", ("--state", "{dev}", "fetch", "x", "--out", "{nowhere}/f"), 2, "existing"),
    Row(
        D,
        "fetch",
        ("--state", "{refused}", "fetch", "x", "--out", "{d}/f"),
        4,
        "connection refused",
    ),
    Row(D, "update", ("--state", "{dev}", "update", "--from", "{nowhere}"), 4, "mounted"),
    Row(D, "update", ("--state", "{dev}", "update", "--from", "{d}/afile"), 3, "uncompressed tar"),
]


def _id(row: Row) -> str:
    return f"{row.prog} {' '.join(row.argv)}"[:90]


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Exception ignored" not in text, text


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_bad_input_text(row: Row, paths: Paths) -> None:
    r = run(row.prog, *paths.fill(row.argv))
    assert r.returncode == row.code, f"exit {r.returncode}, expected {row.code}\n{r.stderr}"
    assert_no_traceback(r.stderr + r.stdout)
    assert r.stdout == "", r.stdout  # data only on stdout: a failure prints none
    assert row.says.lower() in r.stderr.lower(), r.stderr
    # no library class names ("DeserializationError: ...") in what a user reads
    assert re.findall(r"\b(\w+(?:Error|Exception)):", r.stderr) == [], r.stderr
    family = row.expected_family
    if family != "usage" or "Usage" not in row.says:
        assert f"{row.prog}: {family} error: " in r.stderr, r.stderr


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_bad_input_json(row: Row, paths: Paths) -> None:
    r = run(row.prog, "--json", *paths.fill(row.argv))
    assert r.returncode == row.code, f"exit {r.returncode}, expected {row.code}\n{r.stderr}"
    assert_no_traceback(r.stderr + r.stdout)
    doc = json.loads(r.stdout)  # exactly one JSON document
    assert set(doc) == {"otakit_json", "error"} and doc["otakit_json"] == 1
    err = doc["error"]
    assert set(err) == {"family", "code", "kind", "message", "hint"}
    assert err["family"] == row.expected_family
    assert err["code"] == _CODES[row.expected_family]  # the family's code, also under tuf
    assert row.says.lower() in (err["message"] + " " + (err["hint"] or "")).lower(), err
    assert "WARNING" not in r.stderr or "demo keys" in r.stderr


_FAMILIES = {2: "usage", 3: "security", 4: "transport", 5: "local"}
_CODES = {family: code for code, family in _FAMILIES.items()}


def test_json_after_the_command_counts_too(paths: Paths) -> None:
    r = run(D, *paths.fill(("--state", "{dev}", "mark-bad", "c", "--json")))
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["kind"] == "usage"
    r = run(P, *paths.fill(("repo", "status", "{nowhere}", "--json")))
    assert r.returncode == 5 and json.loads(r.stdout)["error"]["family"] == "local"


def test_verbose_adds_the_traceback(paths: Paths) -> None:
    r = run(P, "-v", *paths.fill(("repo", "status", "{nowhere}")))
    assert r.returncode == 5 and "Traceback" in r.stderr


# --- every command has a row ------------------------------------------------------------------


def _tree(prog: str) -> dict[str, tuple[bool, set[str], str]]:
    """Every command path of a CLI: (is a group, its options, its epilog). The publisher's
    CLI is typer, the device's argparse (verifier.cli_parse); both are walked the same."""
    if prog == D:
        from verifier.cli import build_parser
        from verifier.cli_parse import walk

        return {
            path: (bool(p.commands()), p.option_names(), p.epilog or "")
            for path, p in walk(build_parser())
        }
    import signer.cli

    out: dict[str, tuple[bool, set[str], str]] = {}

    def visit(cmd: object, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        opts = {o for p in cmd.params for o in p.opts}  # type: ignore[attr-defined]
        out[path] = (subs is not None, opts, cmd.epilog or "")  # type: ignore[attr-defined]
        for name, sub in (subs or {}).items():
            visit(sub, f"{path} {name}".strip())

    visit(typer.main.get_command(signer.cli.app), "")
    return out


def test_every_command_of_both_clis_has_a_row() -> None:
    covered = {(r.prog, r.command) for r in ROWS}
    missing = [(prog, c) for prog in PROGS for c in _tree(prog) if (prog, c) not in covered]
    assert missing == []


def test_every_command_takes_json_and_has_the_exit_code_epilog() -> None:
    for prog in PROGS:
        for path, (group, opts, epilog) in _tree(prog).items():
            if group:
                continue  # groups: --json is on the root and on each command
            assert "--json" in opts, (prog, path)
            assert "Exit codes:" in epilog, (prog, path)


# --- help at 80 columns -------------------------------------------------------------------


def _help_cases() -> list[tuple[str, str]]:
    return [(prog, c) for prog in PROGS for c in _tree(prog)]


@pytest.mark.parametrize("case", _help_cases(), ids=[f"{p} {c}" for p, c in _help_cases()])
def test_help_fits_80_columns_uncut(case: tuple[str, str]) -> None:
    prog, path = case
    r = run(prog, *path.split(), "--help")
    assert r.returncode == 0, r.stderr
    long = [ln for ln in r.stdout.splitlines() if len(ln) > 80]
    assert long == [], long
    assert "…" not in r.stdout and "..." not in r.stdout.replace("[ARGS]...", ""), r.stdout
    assert "Exit codes:" in r.stdout


def test_version_on_both_clis() -> None:
    from verifier import __version__

    for prog in PROGS:
        r = run(prog, "--version")
        assert (r.returncode, r.stdout.strip()) == (0, f"{prog} {__version__}")


def test_shell_completion_is_available() -> None:
    """A user's shell is detected from the process tree (shellingham); under pytest there is
    no shell to find, so the shell is named through typer's own test switch instead."""
    for prog in PROGS:
        r = subprocess.run(
            command(prog, "--show-completion", "bash"),
            capture_output=True,
            text=True,
            env={**env(), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
            timeout=60,
            check=False,
        )
        assert r.returncode == 0 and f"_{prog.replace('-', '_')}_completion" in r.stdout, r.stderr


# --- docs/CLI.md tables -----------------------------------------------------------------------

CLI_MD = (ROOT / "docs" / "CLI.md").read_text()


def _table_after(marker: str) -> list[list[str]]:
    block = CLI_MD.split(marker, 1)[1].split("\n\n", 1)[0]
    rows = [ln for ln in block.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def test_exit_code_table_in_docs_is_the_code() -> None:
    table = _table_after("<!-- exit-codes:")
    assert [(int(r[0]), r[2]) for r in table] == list(EXIT_CODES)


def _error_classes() -> Iterator[type[OtakitError]]:
    for pkg in ("verifier", "repo", "signer"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, f"{pkg}."):
            importlib.import_module(info.name)

    def walk(c: type[OtakitError]) -> Iterator[type[OtakitError]]:
        if c.__module__.partition(".")[0] in ("verifier", "repo", "signer"):
            yield c  # production classes only (tests subclass errors for their own fakes)
        for s in c.__subclasses__():
            yield from walk(s)

    yield from walk(OtakitError)


def test_every_error_kind_is_documented_with_its_family() -> None:
    documented = {r[0].strip("`"): r[1] for r in _table_after("<!-- error-kinds:")}
    found = {c.kind(): c.family for c in _error_classes() if c is not OtakitError}
    assert documented == found


def test_no_error_class_outside_the_errors_modules() -> None:
    homes = {"verifier.errors", "repo.errors"}
    strays = [f"{c.__module__}.{c.__name__}" for c in _error_classes() if c.__module__ not in homes]
    assert strays == []
