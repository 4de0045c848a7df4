"""The fleet simulator's settings: no heavy imports, so the CLI can offer them cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from repo.errors import UsageError

FAULTS = ("connection-cut", "power-cut", "health-check", "offline")
#: what the operator does (``signer.fleet.simulate``'s docstring)
SCENARIOS = ("update", "halt", "recall")


@dataclass(frozen=True)
class SimConfig:
    devices: int = 500
    workers: int = 8
    seed: int = 1
    #: share of devices with each fault (the default adds up to 10 %)
    faults: tuple[tuple[str, float], ...] = (
        ("connection-cut", 0.03),
        ("power-cut", 0.03),
        ("health-check", 0.02),
        ("offline", 0.02),
    )
    #: share of devices starting on 0.9, for which no delta is published (full download)
    no_base: float = 0.2
    #: per-connection reset probability behind the cutting proxy
    cut_rate: float = 0.5
    image_size: int = 4 << 20
    #: files in each image's tree (0: as many as fit the image size comfortably)
    image_files: int = 0
    sample_every: float = 0.5
    scenario: str = "update"
    #: release 2.0 in these waves (``--waves`` syntax); None: the scenario's own
    waves: str | None = None

    @property
    def files(self) -> int:
        return self.image_files or max(8, self.image_size // (48 << 10))

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 100_000:
            raise UsageError(f"--devices: expected 1..100000, found {self.devices}")
        if self.scenario not in SCENARIOS:
            raise UsageError(
                f"--scenario: expected one of {list(SCENARIOS)}, found {self.scenario!r}"
            )
        if not 1 <= self.workers <= 256:
            raise UsageError(f"--workers: expected 1..256, found {self.workers}")
        unknown = [k for k, _ in self.faults if k not in FAULTS]
        if unknown:
            raise UsageError(f"fault kinds: expected some of {list(FAULTS)}, found {unknown}")
        shares = [r for _, r in self.faults] + [self.no_base]
        if any(not 0 <= r <= 1 for r in shares) or sum(r for _, r in self.faults) > 1:
            raise UsageError(
                f"fault shares: expected each in 0..1 and their sum at most 1, found {shares}"
            )
