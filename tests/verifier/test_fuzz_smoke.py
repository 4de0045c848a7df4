"""The fuzz bench's short seeded run, kept in CI (the long runs: bench/RESULTS.md, "Fuzzing").

Every harness of ``bench/fuzz.py`` gets its valid seeds and a few thousand seeded mutants of
them (byte changes, cuts, splices, the bench's dictionary tokens), in process, through the
same ``Checker`` the bench uses: each input must be parsed or refused with one of our errors.
One harness also runs under the real atheris engine, to keep the bench command itself working.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MUTANTS_PER_HARNESS = 2000

#: Crash sites the fuzz bench found that are not fixed yet, (exception type, file it is
#: raised in) -> what must fix it: the seeded run tolerates only these. Each crash found gets
#: a case in CRASH_INPUTS below; all found so far are fixed.
KNOWN_CRASH_SITES: dict[tuple[str, str], str] = {}


@functools.cache
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otakit_bench_fuzz", ROOT / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@functools.cache
def harness(name: str) -> Any:
    return fuzz().build_harnesses()[name]()


def mutate(r: random.Random, seed: bytes, tokens: list[bytes]) -> bytes:
    d = bytearray(seed)
    for _ in range(r.randint(1, 4)):
        op = r.random()
        at = r.randrange(len(d) + 1)
        if op < 0.4 and d:  # one byte changed, often to a structural character
            d[min(at, len(d) - 1)] = r.choice([*b'{}[]":,0-.e\\', r.randrange(256)])
        elif op < 0.55:  # a cut
            del d[at : at + r.randint(1, 64)]
        elif op < 0.8:  # a token spliced in, or over what was there
            tok = r.choice(tokens)
            d[at : at + (len(tok) if r.random() < 0.5 else 0)] = tok
        elif op < 0.9:  # a slice repeated
            end = min(len(d), at + r.randint(1, 128))
            d[at:at] = d[at:end] * r.randint(1, 3)
        else:  # truncated
            del d[at:]
    return bytes(d)


@pytest.mark.parametrize("name", fuzz().PARSERS)
def test_a_seeded_run_finds_no_crash(name: str, tmp_path: Path) -> None:
    h = harness(name)
    checker = fuzz().Checker(h, tmp_path)
    for seed in h.seeds:
        assert checker(seed) is None, f"{name}: a seed crashes: {checker.stats.sites}"
    assert checker.stats.rejected < len(h.seeds), f"{name}: no seed is accepted: a dead harness"
    tokens = [tok.strip(b'"') or tok for tok in fuzz()._TOKENS] + [b'"sha256"', b'"version"']
    r = random.Random(f"otakit-fuzz-{name}")
    crashes = []
    for _ in range(MUTANTS_PER_HARNESS):
        data = mutate(r, r.choice(h.seeds), tokens)
        site = checker(data)
        if site is not None and _site_key(site) not in KNOWN_CRASH_SITES:
            crashes.append((site, data[:200]))
    assert not crashes, f"{name}: {len(crashes)} crash(es), first: {crashes[0]}"
    assert checker.stats.rejected > 0  # the mutants reached the parser's checks


def _site_key(site: str) -> tuple[str, str]:
    """``"TypeError at parse.py:887"`` -> ``("TypeError", "parse.py")``."""
    kind, _, where = site.partition(" at ")
    return kind, where.rpartition(":")[0]


def _edited(seed: bytes, edit: Any, resign_as: str | None = None) -> bytes:
    """A seed changed by ``edit(signed_dict)``, signed again with the demo key of
    ``resign_as`` so that the input gets past the signature check to the code behind it."""
    from tuf.api.metadata import Metadata

    doc = json.loads(seed)
    edit(doc["signed"])
    data = json.dumps(doc).encode()
    if resign_as is None:
        return data
    md: Any = Metadata.from_bytes(data)
    return bytes(fuzz()._signed(md, fuzz()._demo_signers()[resign_as]))


def _with_float(signed: dict[str, Any]) -> None:
    signed["x-float"] = 1.5


def _with_surrogate(signed: dict[str, Any]) -> None:
    signed["x-text"] = "\ud800"


def _shake_hash(signed: dict[str, Any]) -> None:
    signed["meta"]["targets.json"] = {"version": 3, "hashes": {"shake_128": "00"}}


def _seeds() -> Any:
    return fuzz().make_seeds()


#: Inputs that crashed a harness (found by bench/fuzz.py or its seeded run; bench/RESULTS.md,
#: "Fuzzing"): each must now be refused with one of our errors.
CRASH_INPUTS = [
    ("root", lambda: _edited(_seeds().root1, _with_float), "float in a root"),
    ("metadata", lambda: _edited(_seeds().timestamp, _with_surrogate),
     "lone surrogate in a timestamp"),
    ("metadata", lambda: _edited(_seeds().snapshot, _shake_hash, resign_as="snapshot"),
     "snapshot naming a shake_128 hash (hashlib has no plain hexdigest() for it)"),
    ("trusted-pointer", lambda: b'{"generation": 1, "roles": ["\\ud800"]}',
     "lone surrogate in current.json"),
    ("trusted-pointer", lambda: b'{"generation": 3, "roles": [1]}', "number as a role name"),
    ("config", lambda: b"[" * 5000, "config.json nested 5000 deep"),
    ("journal", lambda: b"[" * 5000, "journal.json nested 5000 deep"),
]  # fmt: skip


@pytest.mark.parametrize("name,make,what", CRASH_INPUTS, ids=[c[2] for c in CRASH_INPUTS])
def test_an_input_that_crashed_a_parser_is_refused_with_our_error(
    name: str, make: Any, what: str
) -> None:
    with pytest.raises(fuzz().Checker(harness(name), None).allowed):
        harness(name).target(make())


def test_the_bench_command_runs_atheris_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--parser", "artifact",
         "--runs", "2000", "--crash-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["parser"] == "artifact"
    assert report["executions"] == 2000
    assert report["crashes"] == 0 and report["exec_per_s"] > 0
    assert report["coverage"]["cov"] > 0  # the parser was instrumented
