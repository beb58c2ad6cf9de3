"""Download stage against a local HTTP server on 127.0.0.1 that drops the connection
mid-file once: resume, verification, atomicity, idempotency and clear failures."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from tracenet.data.download import DownloadError, Source, download_dataset, download_file, fetch_source


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("pack/hello.txt", "hello")
        zf.writestr("pack/blob.bin", bytes(range(256)) * 400)  # ~100 KB: many chunks
    return buf.getvalue()


class Server:
    """Serves one payload at /pack.zip with Range support; ``drops`` responses are cut off
    after half the body; ``honor_range=False`` imitates a server without resume."""

    def __init__(self, payload: bytes, drops: int = 1, honor_range: bool = True) -> None:
        self.payload, self.drops, self.honor_range = payload, drops, honor_range
        self.ranges: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path != "/pack.zip":
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                outer.ranges.append(header)
                start = 0
                match = re.match(r"bytes=(\d+)-", header or "")
                if match and outer.honor_range:
                    start = int(match.group(1))
                    if start >= len(outer.payload):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}"
                    )
                else:
                    self.send_response(200)
                body = outer.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drops > 0:
                    outer.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pack.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


FAST = {"chunk": 4096, "backoff": 0.0, "timeout": 5.0}


def source(url: str, payload: bytes, md5: str | None = None) -> Source:
    return Source("pack", url, md5 or hashlib.md5(payload).hexdigest(), "pack/hello.txt")


def test_dropped_connection_resumes_with_range_and_verifies(tmp_path: Path):
    payload = make_zip()
    logs: list[str] = []
    with Server(payload, drops=1) as server:
        assert fetch_source(source(server.url, payload), tmp_path, log=logs.append, **FAST) is True
    assert server.ranges[0] is None
    first = len(payload) // 2
    assert server.ranges[1] == f"bytes={first}-"  # resumed from what arrived, not from zero
    assert (tmp_path / "pack" / "hello.txt").read_text() == "hello"
    assert (tmp_path / "pack" / "blob.bin").read_bytes() == bytes(range(256)) * 400
    assert (tmp_path / ".pack.done").is_file()
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))
    assert any("resuming" in line for line in logs)


def test_finished_source_is_skipped_without_network(tmp_path: Path):
    payload = make_zip()
    with Server(payload, drops=0) as server:
        assert fetch_source(source(server.url, payload), tmp_path, **FAST) is True
        assert fetch_source(source(server.url, payload), tmp_path, **FAST) is False
    assert len(server.ranges) == 1


def test_server_without_range_support_restarts_cleanly(tmp_path: Path):
    payload = make_zip()
    with Server(payload, drops=1, honor_range=False) as server:
        dest = download_file(
            server.url, tmp_path / "pack.zip", hashlib.md5(payload).hexdigest(), log=lambda _: None, **FAST
        )
    assert dest.read_bytes() == payload


def test_checksum_mismatch_deletes_the_download(tmp_path: Path):
    payload = make_zip()
    with Server(payload, drops=0) as server, pytest.raises(DownloadError, match="MD5"):
        download_file(server.url, tmp_path / "pack.zip", "0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_says_what_failed_and_how_to_place_it(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/pack.zip"
    with pytest.raises(DownloadError, match="by hand") as err:
        download_file(url, tmp_path / "pack.zip", "ab" * 16, retries=1, log=lambda _: None, **FAST)
    assert url in str(err.value) and str(tmp_path / "pack.zip") in str(err.value)
    assert not (tmp_path / "pack.zip").exists()


def test_http_error_is_not_retried(tmp_path: Path):
    with Server(b"x", drops=0) as server, pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url.replace("pack.zip", "missing.zip"), tmp_path / "m.zip", **FAST)
    assert server.ranges == []


def test_archive_placed_by_hand_is_checked(tmp_path: Path):
    payload = make_zip()
    src = Source("pack", "http://127.0.0.1:9/pack.zip", hashlib.md5(payload).hexdigest(), "pack/hello.txt")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "pack.zip").write_bytes(payload[:-10])
    with pytest.raises(DownloadError, match="MD5"):
        fetch_source(src, tmp_path, **FAST)
    (tmp_path / "downloads" / "pack.zip").write_bytes(payload)
    assert fetch_source(src, tmp_path, **FAST) is True  # no network needed
    assert (tmp_path / "pack" / "hello.txt").is_file()


def test_synthetic_download_is_a_stated_noop(tmp_path: Path):
    logs: list[str] = []
    manifest = tmp_path / "downloads" / "synthetic.json"
    assert download_dataset([], tmp_path / "synthetic", manifest=manifest, log=logs.append) == {}
    assert "nothing to download" in logs[0]
    assert json.loads(manifest.read_text())["sources"] == {}


def test_unknown_source_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown download source"):
        download_dataset(["coco2099"], tmp_path)


def test_not_enough_disk_space_fails_before_writing(tmp_path: Path, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _: usage(100, 90, 10))
    payload = make_zip()
    with Server(payload, drops=0) as server, pytest.raises(DownloadError, match="GiB free"):
        download_file(server.url, tmp_path / "pack.zip", **FAST)
    assert list(tmp_path.iterdir()) == []
