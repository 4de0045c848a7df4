from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from repo.nginx import nginx_serving, served_requests


def test_nginx_serves_files_and_refuses_traversal(
    tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    root = tmp_path / "www"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "timestamp.json").write_bytes(b"{}")
    (tmp_path / "secret").write_text("no")
    with nginx_serving(require_tool("nginx"), root, tmp_path / "nginx") as url:
        with urllib.request.urlopen(url + "/metadata/timestamp.json") as r:
            assert r.read() == b"{}"
        with urllib.request.urlopen(url + "/metadata/timestamp.json") as r:
            assert r.read() == b"{}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/../secret")
        assert e.value.code in (400, 404)
    served = [r for r in served_requests(tmp_path / "nginx") if r.path.startswith("/metadata/")]
    assert [(r.status, r.body_bytes) for r in served] == [(200, 2), (200, 2)]
