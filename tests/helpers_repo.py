"""Test helpers for publisher tests: read a repository directory the way a device would.

``DirFetcher`` is an ngclient fetcher that serves ``file://`` URLs from disk (and counts
requests), so a python-tuf ``Updater`` can verify a repository without a server.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater

from repo.keys import KeyConfig
from repo.repository import init, load_role_signers, open_transaction
from signer.keygen import generate_demo_keys

# python-tuf checks expiry against the real clock: test metadata must be signed near real time
NOW = datetime.now(UTC).replace(microsecond=0)


class DirFetcher(FetcherInterface):
    def __init__(self) -> None:
        self.requests: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.requests.append(url)
        assert url.startswith("file://"), url
        path = Path(url[len("file://") :])
        if not path.is_file():
            raise DownloadHTTPError(f"not found: {url}", 404)
        return iter([path.read_bytes()])


def make_updater(repo_dir: Path, client_dir: Path, root_bytes: bytes) -> Updater:
    """A fresh (or continuing, if ``client_dir`` has a cache) client over ``repo_dir``."""
    (client_dir / "metadata").mkdir(parents=True, exist_ok=True)
    (client_dir / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(client_dir / "metadata"),
        metadata_base_url=f"file://{repo_dir}/metadata/",
        target_dir=str(client_dir / "targets"),
        target_base_url=f"file://{repo_dir}/targets/",
        fetcher=DirFetcher(),
        bootstrap=root_bytes,
    )


def client_view(repo_dir: Path, client_dir: Path, root_bytes: bytes) -> dict[str, bytes]:
    """Refresh like a device and download every target; returns target path -> bytes.

    Raises whatever python-tuf raises if the repository does not verify.
    """
    updater = make_updater(repo_dir, client_dir, root_bytes)
    updater.refresh()
    # Top-level targets only: list them from the targets.json the client just verified.
    listed = json.loads((client_dir / "metadata" / "targets.json").read_bytes())["signed"][
        "targets"
    ]
    (client_dir / "dl").mkdir(exist_ok=True)
    out: dict[str, bytes] = {}
    for path in sorted(listed):
        info = updater.get_targetinfo(path)
        assert info is not None, path
        local = updater.download_target(info, str(client_dir / "dl" / path.replace("/", "_")))
        out[path] = Path(local).read_bytes()
    return out


# --- fixtures (imported by tests/repo/conftest.py and tests/signer/conftest.py) -------------


@pytest.fixture(scope="session")
def session_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyConfig:
    """Demo keys generated once per session (key generation is the slow part)."""
    return generate_demo_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def session_repo(tmp_path_factory: pytest.TempPathFactory, session_keys: KeyConfig) -> Path:
    repo = tmp_path_factory.mktemp("template") / "repo"
    init(repo, session_keys, NOW)
    return repo


@pytest.fixture
def keys(session_keys: KeyConfig) -> KeyConfig:
    return session_keys


@pytest.fixture
def repo(tmp_path: Path, session_repo: Path) -> Path:
    """A freshly initialised repository (version 1 of every role), private to the test."""
    dest = tmp_path / "repo"
    shutil.copytree(session_repo, dest)
    return dest


#: the one target of the ``live`` repository (a plain target: no otakit ``custom`` metadata)
LIVE_PATH = "prod/1/a.img"
LIVE_CONTENT = b"release A " * 500


@pytest.fixture
def live(tmp_path: Path, keys: KeyConfig) -> Path:
    """A repository created at ``NOW`` with one released target (``LIVE_PATH``)."""
    repo = tmp_path / "repo"
    init(repo, keys, NOW)
    src = tmp_path / "a.src"
    src.write_bytes(LIVE_CONTENT)
    with open_transaction(repo) as tx:
        tx.add_target(TargetFile.from_data(LIVE_PATH, LIVE_CONTENT, ["sha256"]), src)
        tx.commit(load_role_signers(keys, ("targets", "snapshot", "timestamp")), NOW)
    return repo


def root_bytes(repo_dir: Path) -> bytes:
    return (repo_dir / "metadata" / "1.root.json").read_bytes()


def publisher_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``otakit ARGV`` in-process: (exit code, stdout, stderr)."""
    from signer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), out, err
