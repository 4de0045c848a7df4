"""A TUF repository in a directory, built with python-tuf's Metadata API, for nginx to serve.

For the standalone client's end-to-end tests: consistent snapshots (``N.role.json``,
hash-prefixed targets), delegated roles (the publisher has none yet), root rotation, and the
hostile moves a test needs — serve an older repository, a new snapshot naming an older
targets, a target whose bytes differ from the signed ones.

A delegated role's file is written where a static server looks for its URL: ngclient asks
for ``1.a%2Fb.json``, and nginx decodes ``%2F`` before it maps the URL to a path, so the file
is ``metadata/1.a/b.json``.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib import parse

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

TOP = ("root", "timestamp", "snapshot", "targets")


class TufRepo:
    """``dir/metadata`` and ``dir/targets`` of a repository, written as the test changes it."""

    def __init__(self, directory: Path, *, days: int = 7) -> None:
        self.dir = directory
        self.expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
        self.metadata_dir.mkdir(parents=True)
        self.targets_dir.mkdir()
        self.signers: dict[str, CryptoSigner] = {r: CryptoSigner.generate_ed25519() for r in TOP}
        self.root = Metadata(Root(expires=self.expires, consistent_snapshot=True))
        for role in TOP:
            self.root.signed.add_key(self.signers[role].public_key, role)
        self.timestamp = Metadata(Timestamp(expires=self.expires))
        self.snapshot = Metadata(Snapshot(expires=self.expires))
        self.roles: dict[str, Metadata[Targets]] = {
            "targets": Metadata(Targets(expires=self.expires))
        }
        self._published: set[str] = set()
        self._write_root()
        self.publish()

    @property
    def metadata_dir(self) -> Path:
        return self.dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.dir / "targets"

    def file(self, name: str) -> Path:
        """The served file of metadata URL name ``name`` (percent-encoded as ngclient asks)."""
        return self.metadata_dir / parse.unquote(name)

    # --- changes ----------------------------------------------------------------------------

    def add_target(self, path: str, data: bytes, role: str = "targets") -> TargetFile:
        tf = TargetFile.from_data(path, data, ["sha256"])
        self.roles[role].signed.targets[path] = tf
        served = self.target_file(tf)
        served.parent.mkdir(parents=True, exist_ok=True)
        served.write_bytes(data)
        return tf

    def target_file(self, tf: TargetFile) -> Path:
        dirname, sep, base = tf.path.rpartition("/")
        return self.targets_dir / f"{dirname}{sep}{tf.hashes['sha256']}.{base}"

    def delegate(
        self, parent: str, name: str, paths: list[str], *, terminating: bool = False
    ) -> None:
        """``parent`` delegates ``paths`` to a new role ``name`` with a key of its own."""
        signer = CryptoSigner.generate_ed25519()
        self.signers[name] = signer
        delegator = self.roles[parent].signed
        if delegator.delegations is None:
            delegator.delegations = Delegations(keys={}, roles={})
        assert delegator.delegations.roles is not None
        delegator.delegations.roles[name] = DelegatedRole(name, [], 1, terminating, paths=paths)
        delegator.add_key(signer.public_key, name)
        self.roles[name] = Metadata(Targets(expires=self.expires))

    def rotate_root(self) -> None:
        """Root N+1 with a new root key, signed by the old key and the new one (TUF 5.3.4)."""
        old = self.signers["root"]
        new = CryptoSigner.generate_ed25519()
        self.root.signed.revoke_key(old.public_key.keyid, "root")
        self.root.signed.add_key(new.public_key, "root")
        self.signers["root"] = new
        self.root.signed.version += 1
        self.root.signatures.clear()
        self.root.sign(old, append=True)
        self.root.sign(new, append=True)
        self._write(f"{self.root.signed.version}.root.json", self.root.to_bytes())

    def publish(self, *roles: str) -> None:
        """Sign and serve ``roles`` (all targets roles the first time), then a new snapshot
        and timestamp, in TUF order."""
        for role in sorted(roles or self.roles):
            md = self.roles[role]
            if role in self._published:
                md.signed.version += 1
            self._published.add(role)
            md.signatures.clear()
            md.sign(self.signers[role])
            v = md.signed.version
            self._write(f"{v}.{parse.quote(role, '')}.json", md.to_bytes())
            self.snapshot.signed.meta[f"{role}.json"] = MetaFile(v)
        self.publish_snapshot()

    def publish_snapshot(self) -> None:
        """A new snapshot of ``snapshot.signed.meta`` as it stands, and a new timestamp."""
        for md, role in ((self.snapshot, "snapshot"), (self.timestamp, "timestamp")):
            if role in self._published:
                md.signed.version += 1
            self._published.add(role)
            if role == "timestamp":
                self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
            md.signatures.clear()
            md.sign(self.signers[role])
        self._write(f"{self.snapshot.signed.version}.snapshot.json", self.snapshot.to_bytes())
        self._write("timestamp.json", self.timestamp.to_bytes())

    # --- what is served ------------------------------------------------------------------------

    def served(self, name: str) -> bytes:
        return self.file(name).read_bytes()

    def save(self, to: Path) -> Path:
        shutil.copytree(self.metadata_dir, to)
        return to

    def restore(self, saved: Path) -> None:
        """Serve an earlier copy of the metadata (a rollback by the server or a mirror)."""
        shutil.rmtree(self.metadata_dir)
        shutil.copytree(saved, self.metadata_dir)

    def _write_root(self) -> None:
        self.root.sign(self.signers["root"])
        self._write("1.root.json", self.root.to_bytes())

    def _write(self, name: str, data: bytes) -> None:
        path = self.file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
