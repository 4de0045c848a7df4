"""Coverage-guided fuzzing (atheris, libFuzzer) of every device parser of untrusted bytes.

    python bench/fuzz.py --parser metadata --runs 1000000
    python bench/fuzz.py --all --runs 1000000          # one child process per parser
    python bench/fuzz.py --list

Each harness feeds the fuzzer's bytes to one parser the way the device reaches it and allows
only our documented errors (``verifier.errors.OtakitError`` and its tree): any other exception
is a crash. A crash does not stop the run: it is counted, its input saved under
``--crash-dir/PARSER/`` (at most a few per distinct exception site) and the run goes on, so
one report says how many executions ran and how many crashed.

Harnesses (``--list``):

* ``metadata``   TUF metadata before TUF: ``checks.parse_metadata`` for the role the bytes
                 claim, then signature counting against a trusted root, expiry, and every
                 target's ``custom`` through ``client.candidate``;
* ``rootchain``  a next root offered to ``rootchain.walk_root_chain`` from a trusted root 1;
* ``root``       the pinned root loader ``client.load_root_bytes`` (``init --root``);
* ``artifact``   a target's ``custom`` (``ArtifactInfo.from_custom``);
* ``delta``      the delta container: ``format.parse_prefix``/``iter_ops`` and the whole
                 decoder (``decode.apply_delta``) on a 16 KiB base, the header hash re-made
                 so mutations reach the parser (a hostile publisher, the worst case);
* ``config``, ``journal``  the device's state files through their loaders
                 (``state.load_config``, ``state.load_journal``);
* ``trusted-pointer``  the trusted metadata pointer ``STATE/metadata/current.json``
                 (``store.TrustedStore.current``).

The seeds are valid inputs built at start (demo keys from keys-example/, a fixed clock), so
mutation starts deep inside each format. Results are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_KEYS = ROOT / "keys-example" / "keys.json"
#: The fuzz clock: seeds expire after it, so valid seeds pass the expiry check.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2036, 1, 1, tzinfo=UTC)
#: Inputs saved per distinct crash site (exception type + innermost frame).
SAVED_PER_SITE = 3
#: Modules instrumented for coverage (first imported inside ``atheris.instrument_imports``).
INSTRUMENTED = ("verifier", "tuf", "securesystemslib")


@dataclass(frozen=True)
class Harness:
    name: str
    target: Callable[[bytes], None]
    seeds: list[bytes]
    max_len: int


@dataclass
class Stats:
    parser: str
    executions: int = 0
    rejected: int = 0  # inputs refused with one of our errors: the expected outcome
    crashes: int = 0
    sites: dict[str, int] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def report(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return {
            "parser": self.parser,
            "executions": self.executions,
            "seconds": round(seconds, 1),
            "exec_per_s": round(self.executions / seconds),
            "rejected": self.rejected,
            "crashes": self.crashes,
            "crash_sites": self.sites,
            "saved": self.saved,
        }


class Checker:
    """Runs one input through a harness and sorts the outcome: ok, refused, or crash."""

    def __init__(self, harness: Harness, crash_dir: Path | None) -> None:
        from verifier.errors import OtakitError

        self.harness = harness
        self.allowed = OtakitError
        self.crash_dir = crash_dir
        self.stats = Stats(harness.name)

    def __call__(self, data: bytes) -> str | None:
        """None if ``data`` was parsed or refused with our error, else the crash site."""
        self.stats.executions += 1
        try:
            self.harness.target(data)
        except self.allowed:
            self.stats.rejected += 1
        except Exception as e:
            return self._crash(data, e)
        return None

    def _crash(self, data: bytes, e: Exception) -> str:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        site = f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno}"
        self.stats.crashes += 1
        seen = self.stats.sites.get(site, 0)
        self.stats.sites[site] = seen + 1
        if self.crash_dir is not None and seen < SAVED_PER_SITE:
            out = self.crash_dir / self.harness.name
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            (path.with_suffix(".txt")).write_text(
                f"{site}\n{''.join(traceback.format_exception(e))}"
            )
            self.stats.saved.append(str(path))
        return site


# --- seeds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeds:
    root1: bytes
    root2: bytes
    timestamp: bytes
    snapshot: bytes
    targets: bytes
    customs: list[bytes]


def _demo_signers() -> dict[str, list[Any]]:
    from repo.keys import load_key_config, load_signers

    conf = load_key_config(DEMO_KEYS)
    return {r: load_signers(conf, r) for r in ("root", "targets", "snapshot", "timestamp")}


def _signed(md: Any, signers: list[Any]) -> bytes:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    data: bytes = md.to_bytes()
    return data


def _artifact_customs() -> list[dict[str, Any]]:
    from verifier.artifact import ArtifactInfo, BaseRef, ImageRef, ImageVersion

    image = ImageRef(1 << 20, "ab" * 32)
    full = ArtifactInfo(
        "edge-gw", ("board-x", "board-y"), ImageVersion.parse("2.0.1"), "full", "zstd", image,
        image_type="ext4",
    )  # fmt: skip
    delta = ArtifactInfo(
        "edge-gw", ("board-x",), ImageVersion.parse("2.0.1"), "delta", "otakit-delta", image,
        base=BaseRef(ImageVersion.parse("1.0"), ImageRef(1 << 20, "cd" * 32)),
        delta_header=ImageRef(4242, "ef" * 32), allow_downgrade=True,
    )  # fmt: skip
    return [full.to_custom(), delta.to_custom()]


def make_seeds() -> Seeds:
    """A small, valid, signed TUF repository's metadata (demo keys, fixed dates)."""
    from tuf.api.metadata import (  # type: ignore[attr-defined]
        Metadata,
        MetaFile,
        Root,
        Snapshot,
        TargetFile,
        Targets,
        Timestamp,
    )

    signers = _demo_signers()
    root = Root(version=1, expires=EXPIRES, consistent_snapshot=True)
    for role, role_signers in signers.items():
        for s in role_signers:
            root.add_key(s.public_key, role)
    root.roles["root"].threshold = 2
    root1 = _signed(Metadata(root), signers["root"])
    root.version = 2
    root2 = _signed(Metadata(root), signers["root"])
    customs = _artifact_customs()
    targets = Targets(version=3, expires=EXPIRES)
    for i, custom in enumerate(customs):
        tf = TargetFile(1000 + i, {"sha256": f"{i:02x}" * 32}, f"edge-gw/2.0.1/a{i}.zst")
        tf.unrecognized_fields["custom"] = custom
        targets.targets[tf.path] = tf
    targets_b = _signed(Metadata(targets), signers["targets"])
    snapshot = Snapshot(version=4, expires=EXPIRES)
    snapshot.meta["targets.json"] = MetaFile(
        3, len(targets_b), {"sha256": hashlib.sha256(targets_b).hexdigest()}
    )
    snapshot_b = _signed(Metadata(snapshot), signers["snapshot"])
    timestamp = Timestamp(version=5, expires=EXPIRES, snapshot_meta=MetaFile(4))
    timestamp_b = _signed(Metadata(timestamp), signers["timestamp"])
    return Seeds(root1, root2, timestamp_b, snapshot_b, targets_b, [_dump(c) for c in customs])


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


# --- harnesses ---------------------------------------------------------------------------------

_TYPE_RE = re.compile(rb'"_type"\s*:\s*"([a-z]{1,16})"')


def _metadata(seeds: Seeds) -> Harness:
    from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]

    from verifier.tuf.checks import (
        TOP_LEVEL_ROLES,
        check_expiry,
        check_meta,
        check_signatures,
        parse_metadata,
    )
    from verifier.tuf.client import candidate

    trusted: Root = Metadata[Root].from_bytes(seeds.root1).signed

    def target(data: bytes) -> None:
        m = _TYPE_RE.search(data)
        claimed = m.group(1).decode() if m else "targets"
        role = claimed if claimed in TOP_LEVEL_ROLES else "targets"
        md = parse_metadata(data, role, "fuzzed metadata")
        check_signatures(trusted, role, md, "fuzzed metadata")
        check_expiry(md, NOW)
        signed = md.signed
        if role == "targets":
            for tf in signed.targets.values():
                candidate(tf)
        elif role == "snapshot":
            for meta in signed.meta.values():
                check_meta(meta, data, role, "fuzzed snapshot")
        elif role == "timestamp":
            check_meta(signed.snapshot_meta, data, role, "fuzzed timestamp")

    seeds_ = [seeds.root1, seeds.timestamp, seeds.snapshot, seeds.targets]
    return Harness("metadata", target, seeds_, 8192)


def _rootchain(seeds: Seeds) -> Harness:
    from verifier.tuf import rootchain

    # The walk re-verifies its trusted starting root on every call (two signature checks
    # that tell nothing about the fuzzed bytes and cost most of the time): verify it once,
    # then run the walk's own per-link step on each input.
    trusted = rootchain.walk_root_chain(seeds.root1, lambda v: None, label="fuzzed").newest

    def target(data: bytes) -> None:
        rootchain._link(trusted, data, "fuzzed")

    return Harness("rootchain", target, [seeds.root2, seeds.root1], 8192)


def _file_harness(
    name: str, seeds: list[bytes], filename: str, read: Callable[[Path], object]
) -> Harness:
    """A harness over a parser that reads ``dir/filename`` (the device's own loader)."""
    holder: dict[str, Path] = {}

    def target(data: bytes) -> None:
        if "dir" not in holder:
            holder["dir"] = Path(tempfile.mkdtemp(prefix="otakit-fuzz-", dir=_shm()))
        path = holder["dir"] / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        read(holder["dir"])

    return Harness(name, target, seeds, 4096)


def _shm() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def _root(seeds: Seeds) -> Harness:
    from verifier.tuf.client import load_root_bytes

    return _file_harness(
        "root", [seeds.root1, seeds.root2], "root.json", lambda d: load_root_bytes(d / "root.json")
    )


def _artifact(seeds: Seeds) -> Harness:
    from verifier.artifact import ArtifactInfo

    def target(data: bytes) -> None:
        try:
            custom = json.loads(data)
        except (ValueError, RecursionError):
            return  # not JSON: python-tuf refuses it before anything reads ``custom``
        ArtifactInfo.from_custom(custom)

    return Harness("artifact", target, seeds.customs, 2048)


def _device_state() -> tuple[bytes, bytes]:
    from verifier.artifact import ImageRef, ImageVersion
    from verifier.state import DeviceConfig, Failure, Journal, Pending, SlotRecord

    config = DeviceConfig(
        repo_url="https://updates.example.com/repo",
        product="edge-gw",
        hardware="board-x",
        slot_a=Path("/dev/disk/by-partlabel/a"),
        slot_b=Path("/dev/disk/by-partlabel/b"),
        boot_backend="file",
        tries=3,
        image_type="ext4",
        slot_targets=(Path("/dev/sda2"), Path("/dev/sda3")),
    )
    rec = SlotRecord(ImageVersion.parse("1.0"), ImageRef(4096, "ab" * 32))
    pending = Pending("b", SlotRecord(ImageVersion.parse("2.0"), ImageRef(8192, "cd" * 32)), True)
    failed = Failure(ImageVersion.parse("1.5"), "ef" * 32, "b", "trial failed", "2026-01-01")
    journal = Journal(slots=(rec, None), pending=pending, failures=(failed,))
    return _dump(config.to_dict()), _dump(journal.to_dict())


def _config() -> Harness:
    from verifier.state import StatePaths, load_config

    seed = _device_state()[0]
    return _file_harness("config", [seed], "config.json", lambda d: load_config(StatePaths(d)))


def _journal() -> Harness:
    from verifier.state import StatePaths, load_journal

    seed = _device_state()[1]
    return _file_harness("journal", [seed], "journal.json", lambda d: load_journal(StatePaths(d)))


def _trusted_pointer() -> Harness:
    from verifier.tuf.store import NoDisk, TrustedStore

    seed = b'{"generation": 3, "roles": ["snapshot", "targets", "timestamp"]}\n'
    return _file_harness(
        "trusted-pointer",
        [seed],
        "metadata/current.json",
        lambda d: TrustedStore(d / "metadata", NoDisk()).current(),  # type: ignore[arg-type]
    )


class _Sink:
    """An in-memory WriteHandle for the decoder, bounded by the result length it checks."""

    def __init__(self) -> None:
        self.data = bytearray()

    def pwrite(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        pass


def _tiny_delta() -> tuple[bytes, bytes, bytes, Any]:
    """A 16 KiB base, a 20 KiB new image and the delta between them (every op kind)."""
    import random

    from signer.delta.encode import DeltaOptions, encode_delta

    r = random.Random(9)
    words = [r.randbytes(r.randint(2, 9)) for _ in range(32)]
    text = b"".join(r.choice(words) for _ in range(4000))
    base = text[:12288] + bytes(2048) + r.randbytes(2048)
    new = bytearray(base)
    new[1024:1536] = r.randbytes(512)
    new += bytes(2048) + text[5000:7048]
    with tempfile.TemporaryDirectory(prefix="otakit-fuzz-") as d:
        p = Path(d)
        (p / "base").write_bytes(base)
        (p / "new").write_bytes(bytes(new))
        options = DeltaOptions(
            block_size=512, ref_window=8192, max_op_length=2048, merge_gap_blocks=1, workers=1
        )
        result = encode_delta(p / "base", p / "new", p / "delta", options=options)
        return base, bytes(new), (p / "delta").read_bytes(), result


def _delta() -> Harness:
    from verifier.artifact import ImageRef
    from verifier.delta.decode import apply_delta
    from verifier.delta.format import PREFIX, iter_ops, parse_prefix

    base, _new, delta, result = _tiny_delta()

    def target(data: bytes) -> None:
        # the pure parser alone, with whatever refs the bytes declare
        with contextlib.suppress(_allowed()):
            header = parse_prefix(data)
            for _ in iter_ops(data, header):
                pass
        # the decoder, as the device runs it: the header hash is what was signed
        length = len(data)
        if length >= PREFIX.size:
            length = min(length, max(1, PREFIX.unpack_from(data)[6]))
        header_ref = ImageRef(max(1, length), hashlib.sha256(data[:length]).hexdigest())
        apply_delta(
            io.BytesIO(data),
            io.BytesIO(base),
            _Sink(),
            base_ref=result.base,
            result_ref=result.result,
            header_ref=header_ref,
        )

    return Harness("delta", target, [delta], max(4096, len(delta) * 2))


def _allowed() -> type[Exception]:
    from verifier.errors import OtakitError

    return OtakitError


def build_harnesses() -> dict[str, Callable[[], Harness]]:
    """Name -> a builder (building imports the parser: call it after instrumenting)."""
    seeds: dict[str, Seeds] = {}

    def with_seeds(fn: Callable[[Seeds], Harness]) -> Callable[[], Harness]:
        def make() -> Harness:
            if "s" not in seeds:
                seeds["s"] = make_seeds()
            return fn(seeds["s"])

        return make

    return {
        "metadata": with_seeds(_metadata),
        "rootchain": with_seeds(_rootchain),
        "root": with_seeds(_root),
        "artifact": with_seeds(_artifact),
        "delta": _delta,
        "config": _config,
        "journal": _journal,
        "trusted-pointer": _trusted_pointer,
    }


PARSERS = tuple(build_harnesses())


# --- running -----------------------------------------------------------------------------------


def fuzz_one(name: str, runs: int, seed: int, crash_dir: Path, corpus: Path | None) -> None:
    """Run atheris on one harness in this process; it exits when ``runs`` are done."""
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        import verifier.artifact
        import verifier.delta.decode
        import verifier.delta.format
        import verifier.state
        import verifier.tuf.checks
        import verifier.tuf.client
        import verifier.tuf.rootchain
        import verifier.tuf.store  # noqa: F401
    harness = build_harnesses()[name]()
    checker = Checker(harness, crash_dir)
    stats_file = crash_dir / f"{name}.stats.json"
    crash_dir.mkdir(parents=True, exist_ok=True)

    def flush() -> None:
        stats_file.write_text(json.dumps(checker.stats.report(), indent=1))

    def one(data: bytes) -> None:
        checker(data)
        n = checker.stats.executions
        if n >= runs or n % 10_000 == 0:
            flush()

    corpus_dir = corpus or Path(tempfile.mkdtemp(prefix=f"otakit-fuzz-corpus-{name}-"))
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(harness.seeds):
        (corpus_dir / f"seed-{i}").write_bytes(s)
    dict_file = crash_dir / f"{name}.dict"
    dict_file.write_text(libfuzzer_dict(harness.seeds))
    flush()
    argv = [
        sys.argv[0], f"-runs={runs}", f"-seed={seed}", f"-max_len={harness.max_len}",
        f"-dict={dict_file}", "-print_final_stats=1", "-rss_limit_mb=2048", "-timeout=10",
        str(corpus_dir),
    ]  # fmt: skip
    atheris.Setup(argv, one)
    atheris.Fuzz()


#: Tokens worth splicing into JSON inputs: other hash algorithms (some have no plain
#: ``hexdigest()``), hostile numbers and strings, deep nesting.
_TOKENS = (
    b'"shake_128"', b'"blake2b"', b'"md5"', b'"sha512"', b'"sha3_256"', b"null", b"true",
    b"false", b"-1", b"0", b"1e400", b"-0.0", b"18446744073709551616", b'"\\u0000"',
    b'"\\ud800"', b"[" * 32, b"{" * 32, b'"../"', b'"/"',
)  # fmt: skip


def libfuzzer_dict(seeds: list[bytes]) -> str:
    """A libFuzzer dictionary: the JSON keys of the seeds and ``_TOKENS``."""
    keys = sorted({k for s in seeds for k in re.findall(rb'"[A-Za-z_][A-Za-z0-9_.-]{0,40}"', s)})
    out = []
    for tok in (*keys, *_TOKENS):
        esc = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in tok
        )
        out.append(f'"{esc}"')
    return "\n".join(out) + "\n"


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--parser NAME`` in a child process (libFuzzer ends the process when it is done)."""
    cmd = [
        sys.executable, __file__, "--parser", name, "--runs", str(args.runs),
        "--seed", str(args.seed), "--crash-dir", str(args.crash_dir), "--child",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    stats_file = args.crash_dir / f"{name}.stats.json"
    if not stats_file.exists():
        raise SystemExit(f"fuzz {name}: no statistics (exit {proc.returncode}):\n{proc.stderr}")
    report: dict[str, Any] = json.loads(stats_file.read_text())
    report["wall_seconds"] = round(time.monotonic() - t0, 1)
    report["libfuzzer_exit"] = proc.returncode
    m = re.search(r"cov: (\d+) ft: (\d+) corp: (\d+)", proc.stderr.rsplit("DONE", 1)[-1])
    if m:
        report["coverage"] = {"cov": int(m[1]), "ft": int(m[2]), "corpus": int(m[3])}
    return report


def render(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| parser | executions | exec/s | crashes | coverage (edges / features) |",
        "|---|---:|---:|---:|---|",
    ]
    for r in reports:
        cov = r.get("coverage")
        cov_s = f"{cov['cov']} / {cov['ft']}" if cov else "-"
        lines.append(
            f"| {r['parser']} | {r['executions']:,} | {r['exec_per_s']:,} | {r['crashes']} | "
            f"{cov_s} |"
        )
    for r in reports:
        for site, n in r["crash_sites"].items():
            lines.append(f"- {r['parser']}: {n} crash(es): {site}")
        for path in r["saved"]:
            lines.append(f"  saved: {path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parser", choices=PARSERS)
    ap.add_argument("--all", action="store_true", help="every parser, one after the other")
    ap.add_argument("--list", action="store_true", help="list the parsers")
    ap.add_argument("--runs", type=int, default=1_000_000, help="executions per parser")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    ap.add_argument(
        "--crash-dir", type=Path, default=Path("fuzz-crashes"), help="crashing inputs go here"
    )
    ap.add_argument("--corpus", type=Path, help="keep the corpus here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the reports as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(PARSERS))
        return 0
    if args.parser and args.child:
        fuzz_one(args.parser, args.runs, args.seed, args.crash_dir, args.corpus)
        return 0  # not reached: libFuzzer exits the process
    names = list(PARSERS) if args.all else [args.parser] if args.parser else []
    if not names:
        ap.error("give --parser NAME, --all or --list")
    reports = []
    for name in names:
        report = run_child(name, args)
        reports.append(report)
        if not args.json:
            print(
                f"{name}: {report['executions']:,} executions, {report['exec_per_s']:,} exec/s, "
                f"{report['crashes']} crash(es)",
                flush=True,
            )
    print(json.dumps(reports, indent=1) if args.json else render(reports))
    return 1 if any(r["crashes"] for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
