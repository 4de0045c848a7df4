"""The release workflow: versions, signed custom metadata, one transaction per release."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from repo.errors import LocalError, ThresholdError, UsageError, VersionNotNewerError
from repo.keys import KeyConfig, parse_key_config
from repo.repository import load_role_signers
from repo.state import load_state
from signer.release import (
    BuiltArtifact,
    PublishedArtifact,
    list_published,
    make_delta_info,
    release,
)
from tests.helpers_repo import NOW, client_view, root_bytes
from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion


def _img(tmp_path: Path, name: str, size: int = 256 * 1024) -> Path:
    """A tar image (so ``release`` recognises it): incompressible content, then zeros."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("payload")
        member.size = size // 4
        tar.addfile(member, io.BytesIO(os.urandom(member.size)))
    data = buf.getvalue()
    p = tmp_path / name
    p.write_bytes(data + bytes(size - len(data)))
    return p


def test_release_publishes_a_verifiable_full_artifact(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    img = _img(tmp_path, "v1.img")
    res = release(repo, keys, "edge-gw", "1.0", img, ["rpi4", "x86-64"], NOW)
    (art,) = res.artifacts
    assert art.target_path == "edge-gw/1.0/full.img.zst"
    assert art.info.hardware == ("rpi4", "x86-64")
    assert art.info.image == ImageRef(img.stat().st_size, art.info.image.sha256)
    assert art.stored_path.name == f"{art.sha256}.full.img.zst"
    assert (res.targets_version, res.snapshot_version, res.timestamp_version) == (2, 2, 2)
    view = client_view(repo, tmp_path / "client", root_bytes(repo))
    assert list(view) == ["edge-gw/1.0/full.img.zst"]
    # the custom metadata a device reads parses back to the same info
    md = Metadata.from_bytes((repo / "metadata" / "2.targets.json").read_bytes())
    assert ArtifactInfo.from_custom(md.signed.targets[art.target_path].custom) == art.info
    custom = md.signed.targets[art.target_path].custom["otakit"]
    assert (custom["schema"], custom["image_type"]) == ("1.1", "tar")
    assert (res.image_type, res.warnings, res.dry_run) == ("tar", (), False)
    assert res.to_json()["artifacts"][0]["sha256"] == art.sha256
    assert not [p for p in repo.iterdir() if p.name.startswith(".otakit-build")]


def test_versions_must_increase(repo: Path, keys: KeyConfig, tmp_path: Path) -> None:
    img = _img(tmp_path, "img")
    release(repo, keys, "edge-gw", "1.10", img, [], NOW)
    for older in ("1.9", "1.10", "1.10.0", "0.1"):
        with pytest.raises(VersionNotNewerError, match=older if older != "1.10.0" else "1.10"):
            release(repo, keys, "edge-gw", older, img, [], NOW)
    release(repo, keys, "other-product", "0.1", img, [], NOW)  # per product
    release(repo, keys, "edge-gw", "1.11", img, [], NOW)
    assert [str(a.info.version) for a in list_published(repo, "edge-gw")] == ["1.10", "1.11"]


def test_a_downgrade_needs_the_flag_and_is_recorded_in_signed_metadata(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    img = _img(tmp_path, "img")
    release(repo, keys, "edge-gw", "2.0", img, [], NOW)
    res = release(repo, keys, "edge-gw", "1.5", img, [], NOW, allow_downgrade=True)
    assert res.artifacts[0].info.allow_downgrade is True
    md = Metadata.from_bytes((repo / "metadata" / "3.targets.json").read_bytes())
    custom = md.signed.targets["edge-gw/1.5/full.img.zst"].custom
    assert custom["otakit"]["allow_downgrade"] is True
    with pytest.raises(VersionNotNewerError, match="already published"):
        release(repo, keys, "edge-gw", "2.0", img, [], NOW, allow_downgrade=True)


@pytest.mark.parametrize(
    ("product", "version", "hardware", "match"),
    [
        ("Edge GW", "1.0", [], "product"),
        ("edge-gw", "1.0-rc1", [], "invalid image version"),
        ("edge-gw", "01.0", [], "invalid image version"),
        ("edge-gw", "1.0", ["../x"], "hardware"),
    ],
)
def test_bad_names_are_refused_before_anything_is_built(
    repo: Path,
    keys: KeyConfig,
    tmp_path: Path,
    product: str,
    version: str,
    hardware: list[str],
    match: str,
) -> None:
    with pytest.raises(UsageError, match=match):
        release(repo, keys, product, version, tmp_path / "does-not-exist", hardware, NOW)
    assert load_state(repo).timestamp.signed.version == 1


def test_default_hardware_is_generic(repo: Path, keys: KeyConfig, tmp_path: Path) -> None:
    res = release(repo, keys, "edge-gw", "1", _img(tmp_path, "img"), [], NOW)
    assert res.artifacts[0].info.hardware == ("generic",)


def test_a_release_without_the_targets_key_publishes_nothing(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    signers = load_role_signers(keys, ("snapshot", "timestamp"))
    with pytest.raises(ThresholdError, match="targets v2"):
        release(repo, keys, "edge-gw", "1", _img(tmp_path, "img"), [], NOW, signers=signers)
    assert load_state(repo).timestamp.signed.version == 1
    assert list((repo / "targets").iterdir()) == []


def test_keys_are_loaded_before_the_image_is_compressed(
    repo: Path, keys: KeyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the image's head (type check) is read before keys; the slow part comes after."""
    import signer.release

    def no_compress(*_a: object, **_k: object) -> None:
        raise AssertionError("compressed before the keys were loaded")

    monkeypatch.setattr(signer.release, "compress_image", no_compress)
    doc = json.loads(keys.source.read_text())
    doc["roles"]["targets"]["keys"][0]["uri"] = "file2:missing.pem"
    broken = parse_key_config(doc, keys.source)
    with pytest.raises(LocalError, match="targets key"):
        release(repo, broken, "edge-gw", "1", _img(tmp_path, "img"), [], NOW)


def test_extra_artifacts_are_published_in_the_same_transaction(
    repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """The hook deltas use: it sees the published artifacts and adds files to the release."""
    release(repo, keys, "edge-gw", "1", _img(tmp_path, "v1"), [], NOW)
    calls: list[tuple[str, list[str]]] = []

    def fake_delta(
        full: BuiltArtifact, image: Path, published: Sequence[PublishedArtifact], work: Path
    ) -> list[BuiltArtifact]:
        calls.append((str(full.info.version), [p.target_path for p in published]))
        base = published[-1]
        assert base.stored_path.is_file()
        blob = work / "delta.otd"
        blob.write_bytes(b"not really a delta")
        import hashlib

        info = make_delta_info(full.info, base.info, ImageRef(1, "1" * 64))
        data = blob.read_bytes()
        return [BuiltArtifact(info, blob, len(data), hashlib.sha256(data).hexdigest())]

    res = release(
        repo, keys, "edge-gw", "2", _img(tmp_path, "v2"), [], NOW, extra_builder=fake_delta
    )
    assert calls == [("2", ["edge-gw/1/full.img.zst"])]
    assert sorted(a.target_path for a in res.artifacts) == [
        "edge-gw/2/delta-from-1.otd",
        "edge-gw/2/full.img.zst",
    ]
    assert res.targets_version == 3  # one metadata bump for both artifacts
    kinds = [(str(a.info.version), a.info.kind) for a in list_published(repo, "edge-gw")]
    assert kinds == [("1", "full"), ("2", "delta"), ("2", "full")]
    assert len(client_view(repo, tmp_path / "c", root_bytes(repo))) == 3
    # a delta is another way to deliver the same image: it carries that image's type
    assert {a.info.image_type for a in res.artifacts} == {"tar"}
    assert ImageVersion.parse("2") == res.version
