"""Issue 9, strict parsing before TUF sees bytes: duplicate JSON keys, one key under two ids,
a signature listed twice, a version ending in a newline. Each device case asserts the clear
error and that the booted slot, the trusted metadata and the boot pointer are unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from securesystemslib.signer import Signature, SSlibKey
from tuf.api.metadata import Metadata

from tests.verifier.conftest import World, evolve
from verifier import strictjson
from verifier.artifact import ImageVersion
from verifier.errors import (
    ArtifactSchemaError,
    ConfigError,
    InvalidMetadataError,
    NothingToDoError,
)
from verifier.state import StatePaths, load_config, load_journal

# --- the reader ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b'{"signed": {"expires": 1, "expires": 2}}', "duplicate key 'expires' at signed"),
        (b'{"a": [{"b": {"c": 1, "c": 1}}]}', "duplicate key 'c' at a[0].b"),
        (b'{"meta": {"snapshot.json": {"v": 1, "v": 2}}}', 'at meta["snapshot.json"]'),
        (b'{"x": 1, "x": 2, "y": 1, "y": 1}', "duplicate key 'x' at the top level (and 1 more)"),
        (b'{"length": NaN}', "NaN is not a JSON number"),
        (b'{"length": -Infinity}', "-Infinity is not a JSON number"),
        (b"[" * 65 + b"]" * 65, f"nested deeper than {strictjson.MAX_DEPTH} levels"),
        (b"[" * 100_000, f"nested deeper than {strictjson.MAX_DEPTH} levels"),
        (b'{"signed": {"_type": "root"', "truncated JSON (it ends after 27 bytes"),
        ('{"a": 1}'.encode("utf-16"), "binary data, not UTF-8 text"),
        (b'\xef\xbb\xbf{"a": 1}', "Unexpected UTF-8 BOM"),
    ],
    ids=[
        "dup-expires", "dup-deep", "dup-dotted-name", "dup-two", "nan", "infinity",
        "depth-65", "depth-hostile", "truncated", "utf16", "bom",
    ],
)  # fmt: skip
def test_the_reader_refuses_and_says_where(data: bytes, found: str) -> None:
    with pytest.raises(ConfigError) as refused:
        strictjson.loads(data, name="timestamp.json", error=ConfigError)
    assert refused.value.message.startswith("timestamp.json: ")
    assert found in refused.value.message, refused.value.message


def test_the_reader_accepts_plain_json_at_the_depth_bound() -> None:
    deep = b"[" * strictjson.MAX_DEPTH + b"]" * strictjson.MAX_DEPTH
    assert strictjson.loads(deep, name="x", error=ConfigError) is not None
    assert strictjson.loads(b'{"a": [1, 2.5, "x"]}', name="x", error=ConfigError) == {
        "a": [1, 2.5, "x"]
    }


def test_duplicates_lists_every_repeat_and_its_path_for_the_reviewer() -> None:
    found = strictjson.duplicates(b'{"a": {"b": 1, "b": 2}, "c": [{"d": 0, "d": 0}]}')
    assert [(d.key, d.at) for d in found] == [("b", "a"), ("d", "c[0]")]
    assert strictjson.duplicates(b"not json") == []


# --- metadata from the repository ----------------------------------------------------------


def _primed(w: World) -> World:
    """A device that trusts the repository's current metadata (refreshed once)."""
    with pytest.raises(NothingToDoError):
        w.update()
    return w


def _dup_in_custom_version(w: World) -> None:
    """targets lists `version` twice in custom.otakit; the signed (last) one is 2.0."""
    path = f"metadata/{w.sim.targets.signed.version}.targets.json"
    text = w.sim.files[path].decode()
    assert text.count('"version":"2.0"') == 1
    w.sim.files[path] = text.replace('"version":"2.0"', '"version":"1.0","version":"2.0"').encode()


def _dup_expires_in_timestamp(w: World) -> None:
    text = w.sim.files["metadata/timestamp.json"].decode()
    w.sim.files["metadata/timestamp.json"] = text.replace(
        '"expires":', '"expires":"2000-01-01T00:00:00Z","expires":', 1
    ).encode()


def _timestamp_signature_twice(w: World) -> None:
    doc = json.loads(w.sim.files["metadata/timestamp.json"])
    doc["signatures"].append(doc["signatures"][0])
    w.sim.files["metadata/timestamp.json"] = json.dumps(doc).encode()


Edit = Callable[[World], None]
REFUSED: dict[str, tuple[Edit, str]] = {
    "duplicated version in custom.otakit": (
        _dup_in_custom_version,
        r"targets\.json from the repository: duplicate key 'version' at "
        r"signed\.targets\[\"edge-gw/2\.0/full\.img\.zst\"\]\.custom\.otakit",
    ),
    "duplicated expires in timestamp": (
        _dup_expires_in_timestamp,
        r"timestamp\.json from the repository: duplicate key 'expires' at signed",
    ),
    "one signature listed twice": (
        _timestamp_signature_twice,
        r"timestamp\.json from the repository: the signature of key [0-9a-f]{16} is listed twice",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_metadata_python_tuf_would_accept_is_refused_before_it_parses(
    world: World, case: str
) -> None:
    edit, message = REFUSED[case]
    _primed(world)
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    edit(world)
    before = world.snapshot()
    with pytest.raises(InvalidMetadataError, match=message) as refused:
        world.update()
    assert refused.value.exit_code == 3
    assert world.snapshot() == before
    assert world.boot_control().read().trial is None


def test_one_key_under_two_ids_does_not_meet_a_threshold_of_two(world: World) -> None:
    """The exact attack of issue 9: root 2 lists the targets key under a second id with
    threshold 2; one signature, listed under both ids, signs targets with a new image.
    python-tuf 7 counts key ids and accepted it; the device refuses root 2 outright."""
    sim = _primed(world).sim
    key = sim.signers["targets"].public_key
    twin = SSlibKey("f" * 64, key.keytype, key.scheme, dict(key.keyval))
    sim.root.signed.add_key(twin, "targets")
    sim.root.signed.roles["targets"].threshold = 2
    sim.root.signed.version += 1
    sim.root.signatures.clear()
    sim.root.sign(sim.signers["root"])
    sim.files["metadata/2.root.json"] = sim.root.to_bytes()
    sim.add_full(evolve(world.v1, 2), "2.0")
    sim.publish()
    path = f"metadata/{sim.targets.signed.version}.targets.json"
    md = Metadata.from_bytes(sim.files[path])
    (sig,) = md.signatures.values()
    md.signatures[twin.keyid] = Signature(twin.keyid, sig.signature)
    assert sim.root.signed.get_verification_result(
        "targets", md.signed_bytes, md.signatures
    ).verified  # python-tuf alone would accept it
    sim.files[path] = md.to_bytes()
    before = world.snapshot()
    with pytest.raises(
        InvalidMetadataError,
        match=r"2\.root\.json from the repository signed\.keys: one public key is listed under "
        r"two key ids",
    ):
        world.update()
    assert world.snapshot() == before
    assert world.boot_control().read().trial is None


# --- versions ending in a newline ------------------------------------------------------------


@pytest.mark.parametrize("text", ["1.2.3\n", "2.0\n", "1\n"])
def test_a_version_ending_in_a_newline_is_no_version(text: str) -> None:
    with pytest.raises(ArtifactSchemaError, match="invalid image version"):
        ImageVersion.parse(text)


def test_a_target_whose_signed_version_ends_in_a_newline_is_not_installed(world: World) -> None:
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    tf = next(iter(world.sim.targets.signed.targets.values()))
    tf.unrecognized_fields["custom"]["otakit"]["version"] = "2.0\n"  # type: ignore[index]
    world.sim.publish()
    with pytest.raises(NothingToDoError):
        world.update()
    assert world.boot_control().read().trial is None


# --- state files -----------------------------------------------------------------------------


def test_a_duplicated_key_in_the_device_config_is_refused(world: World) -> None:
    paths = StatePaths(world.state)
    text = paths.config.read_text()
    paths.config.write_text(text.replace('"product": ', '"product": "other", "product": ', 1))
    with pytest.raises(ConfigError, match=r"config\.json: duplicate key 'product' at the top"):
        load_config(paths)


def test_a_duplicated_key_in_the_journal_is_refused(world: World) -> None:
    paths = StatePaths(world.state)
    text = paths.journal.read_text()
    assert '"version": "1.0"' in text
    paths.journal.write_text(text.replace('"version": "1.0"', '"version": "9.0", "version": "1.0"'))
    with pytest.raises(ConfigError, match=r"journal\.json: duplicate key 'version' at slots\.a"):
        load_journal(paths)
