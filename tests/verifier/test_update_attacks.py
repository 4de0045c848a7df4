"""Issue 2's bad-input list, as threat scenarios against a simulated repository.

Each case asserts the exact error class AND that the booted slot's bytes, the trusted
metadata and the boot pointer are unchanged afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from tests.verifier.conftest import World, evolve, make_world
from tests.verifier.repo_sim import compress, full_info
from verifier.artifact import ImageRef, ImageVersion
from verifier.effects import RealDisk, WriteHandle
from verifier.errors import (
    DecodeLimitError,
    ImageHashMismatchError,
    MetadataError,
    MetadataRollbackError,
    NoSuchVersionError,
    NothingToDoError,
    OtakitError,
    SlotReadBackError,
    TargetVerificationError,
)


class _CorruptingHandle:
    def __init__(self, inner: WriteHandle) -> None:
        self.inner = inner

    def pwrite(self, data: bytes, offset: int) -> None:
        if offset == 0 and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.inner.pwrite(data, offset)

    def fsync(self) -> None:
        self.inner.fsync()

    def close(self) -> None:
        self.inner.close()


class CorruptingDisk(RealDisk):
    """A medium that flips the first byte written to one file (a failing flash chip)."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> WriteHandle:
        h = super().open_write(path, new=new, truncate=truncate)
        return _CorruptingHandle(h) if path == self.victim else h


def _flip(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def _prime_targets(w: World) -> None:
    """The device learns the 2.0 metadata but cannot fetch targets yet (so that the attack
    run itself legitimately changes no metadata)."""
    w.sim.targets_offline = True
    with pytest.raises(OtakitError):
        w.update()
    w.sim.targets_offline = False


def altered_bytes(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    _prime_targets(w)
    key = w.sim.target_key("edge-gw/2.0/full.img.zst")
    w.sim.files[key] = _flip(w.sim.files[key])


def one_byte_longer(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    _prime_targets(w)
    key = w.sim.target_key("edge-gw/2.0/full.img.zst")
    w.sim.files[key] += b"\0"


def bad_targets_signature(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    w.sim.publish(targets_signer=CryptoSigner.generate_ed25519())


def expired_timestamp(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    # ngclient checks expiry against the system clock (documented in verifier/tuf/client.py)
    w.sim.publish(timestamp_expires=datetime.now(UTC) - timedelta(hours=1))


def older_snapshot(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    w.sim.publish(snapshot_version=1)


def decompressed_too_long(w: World, v2: bytes) -> None:
    short = v2[:-1]
    info = full_info(
        v2, "2.0", signed_image=ImageRef(len(short), hashlib.sha256(short).hexdigest())
    )
    w.sim.add_artifact(info, compress(v2))
    w.sim.publish()
    _prime_targets(w)


def slot_reads_back_wrong(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    _prime_targets(w)
    w.disk = CorruptingDisk(w.slot_b)


def another_product_requested(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0", product="other-gw")
    w.sim.publish()
    _prime_targets(w)


def another_hardware_requested(w: World, v2: bytes) -> None:
    w.sim.add_full(v2, "2.0", hardware=("x86-64",))
    w.sim.publish()
    _prime_targets(w)


@dataclass(frozen=True)
class Attack:
    name: str
    arrange: Callable[[World, bytes], None]
    error: type[OtakitError]
    says: str
    request: str | None = None


ATTACKS = [
    Attack(
        "target bytes altered on the server",
        altered_bytes,
        TargetVerificationError,
        "expected sha256",
    ),
    Attack(
        "target one byte longer than signed",
        one_byte_longer,
        TargetVerificationError,
        "more than the signed",
    ),
    Attack(
        "targets metadata with a bad signature", bad_targets_signature, MetadataError, "signature"
    ),
    Attack("expired timestamp", expired_timestamp, MetadataError, "expired"),
    Attack(
        "older snapshot than the device has seen",
        older_snapshot,
        MetadataRollbackError,
        "snapshot version",
    ),
    Attack(
        "decompressed size exceeds the signed length",
        decompressed_too_long,
        DecodeLimitError,
        "exceeds its signed length",
    ),
    Attack(
        "slot reads back with the wrong hash",
        slot_reads_back_wrong,
        SlotReadBackError,
        "reads back wrong",
    ),
    Attack(
        "target for another product",
        another_product_requested,
        NoSuchVersionError,
        "not published",
        request="2.0",
    ),
    Attack(
        "target for another hardware",
        another_hardware_requested,
        NoSuchVersionError,
        "not for this device's 'rpi4'",
        request="2.0",
    ),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_rejected_and_changes_nothing(tmp_path: Path, attack: Attack) -> None:
    w = make_world(tmp_path)
    w.sim.add_full(w.v1, "1.0")
    w.sim.publish()
    with pytest.raises(NothingToDoError):
        w.update()  # the device trusts the 1.0 metadata now
    v2 = evolve(w.v1, 2)
    attack.arrange(w, v2)
    before = w.snapshot()
    version = None if attack.request is None else ImageVersion.parse(attack.request)
    with pytest.raises(attack.error) as exc:
        w.update(version=version)
    assert type(exc.value) is attack.error
    assert attack.says in exc.value.diagnostic()
    assert w.snapshot() == before
    assert w.boot_control().read().trial is None


@pytest.mark.parametrize("product,hardware", [("other-gw", ("rpi4",)), ("edge-gw", ("x86-64",))])
def test_foreign_targets_are_never_chosen_automatically(
    tmp_path: Path, product: str, hardware: tuple[str, ...]
) -> None:
    w = make_world(tmp_path)
    w.sim.add_full(w.v1, "1.0")
    w.sim.add_full(evolve(w.v1, 3), "3.0", product=product, hardware=hardware)
    w.sim.publish()
    with pytest.raises(NothingToDoError) as exc:
        w.update()
    if product == "edge-gw":
        assert "published for hardware ['x86-64'], not for 'rpi4'" in exc.value.message
    assert w.sim.target_requests() == []
    assert w.slot_b.read_bytes() == b""


def test_attack_in_stream_mode_never_arms_the_slot(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    v2 = evolve(w.v1, 2)
    altered_bytes(w, v2)
    before = w.snapshot()
    with pytest.raises((TargetVerificationError, DecodeLimitError, ImageHashMismatchError)):
        w.update(mode="stream")
    assert w.snapshot() == before
    assert w.device().journal().slot("b") is None
