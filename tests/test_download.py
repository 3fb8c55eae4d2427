"""Tests for data_download.sh, the ISIC 2016 Part 3 downloader (Gutman et al. 2016, arXiv:1605.01397).

The real script is run with bash against a small local HTTP server that serves fixture data
with the real file and folder names (5 training and 3 test JPEGs). The server is based on
``http.server`` but answers Range requests, and can cut a response off after N bytes, ignore
Range, or answer 404 for some URL prefixes; it logs every request with its Range header, so
the tests can check that a second run sends no requests and that a resumed download asks for
``bytes=N-`` with N > 0. The script's environment overrides (``ISIC2016_BASE_URLS``,
``ISIC2016_EXPECT_*``, ``ISIC2016_SHA256_*``) point it at the server and the fixture sizes.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_download.sh"

TRAIN_ZIP = "ISBI2016_ISIC_Part3_Training_Data.zip"
TRAIN_CSV = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
TEST_ZIP = "ISBI2016_ISIC_Part3_Test_Data.zip"
TEST_CSV = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
TRAIN_DIR = "ISBI2016_ISIC_Part3_Training_Data"
TEST_DIR = "ISBI2016_ISIC_Part3_Test_Data"

N_TRAIN, N_TEST = 5, 3

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("curl") is None,
    reason="data_download.sh needs bash and curl, and one of them is not installed",
)


# --------------------------------------------------------------------------------------------
# Fixture data
# --------------------------------------------------------------------------------------------
class FixtureData(NamedTuple):
    """Served files (name -> bytes) and the JPEG bytes each split's zip holds (id -> bytes)."""

    files: dict[str, bytes]
    train_images: dict[str, bytes]
    test_images: dict[str, bytes]


def _jpeg(seed: int, size: int = 48) -> bytes:
    """A small noisy RGB JPEG (noise keeps it a few kB, so a zip is worth cutting in half)."""
    raw = hashlib.sha256(str(seed).encode()).digest() * (size * size * 3 // 32 + 1)
    img = Image.frombytes("RGB", (size, size), raw[: size * size * 3])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _zip(images: dict[str, bytes], top: str | None, macosx: bool) -> bytes:
    """A zip of ``ID.jpg`` files, inside folder ``top`` (or at the top level when None)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        prefix = f"{top}/" if top else ""
        if top:
            zf.writestr(prefix, b"")  # the folder entry, as zips made by Finder/Explorer have
        for image_id, data in images.items():
            zf.writestr(f"{prefix}{image_id}.jpg", data)
            if macosx:  # AppleDouble junk that must not be counted or extracted
                zf.writestr(f"__MACOSX/{prefix}._{image_id}.jpg", b"\x00\x05\x16\x07junk")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fixture_data() -> FixtureData:
    train = {f"ISIC_{i:07d}": _jpeg(i) for i in range(N_TRAIN)}
    test = {f"ISIC_{100 + i:07d}": _jpeg(100 + i) for i in range(N_TEST)}
    train_labels = ["benign", "malignant", "benign", "benign", "malignant"]
    test_labels = ["0.0", "1.0", "0.0"]
    files = {
        # Training zip as ISIC ships it (top folder), plus __MACOSX entries.
        TRAIN_ZIP: _zip(train, top=TRAIN_DIR, macosx=True),
        TRAIN_CSV: "".join(f"{k},{v}\n" for k, v in zip(train, train_labels)).encode(),
        # Test zip without the top folder: the script must still produce TEST_DIR.
        TEST_ZIP: _zip(test, top=None, macosx=False),
        TEST_CSV: "".join(f"{k},{v}\n" for k, v in zip(test, test_labels)).encode(),
    }
    return FixtureData(files, train, test)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# HTTP server with Range support
# --------------------------------------------------------------------------------------------
@dataclass
class ServerState:
    """What the fixture server serves and how it misbehaves; all fields may be changed by tests.

    files: name -> bytes, served at ``/<prefix>/<name>`` for each prefix in ``ok_prefixes``;
        any other path gets 404.
    cut_after: name -> N; the next response for that name sends N body bytes and then drops
        the connection (one-shot: the entry is removed when used).
    ignore_range: answer 200 with the whole file even when a Range is asked for.
    log: (path, Range header or None) of every request, in order.
    """

    files: dict[str, bytes]
    ok_prefixes: set[str] = field(default_factory=lambda: {"data"})
    cut_after: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    log: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, name: str) -> list[tuple[str, str | None]]:
        with self.lock:
            return [entry for entry in self.log if entry[0].endswith("/" + name)]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET with single-range ``bytes=START-[END]`` support (206 / 416), driven by ServerState."""

    server_version = "FixtureHTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep pytest output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        with state.lock:
            state.log.append((self.path, range_header))
            parts = self.path.strip("/").split("/")
            ok = len(parts) == 2 and parts[0] in state.ok_prefixes and parts[1] in state.files
            body = state.files[parts[1]] if ok else b""
            cut = state.cut_after.pop(parts[-1], None) if ok else None
            ignore_range = state.ignore_range
        if not ok:
            self.send_error(404, "Not Found")
            return
        size, start, end, status = len(body), 0, len(body) - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if match and not ignore_range:
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if ignore_range else "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        chunk = body[start : end + 1]
        if cut is not None:
            self.wfile.write(chunk[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body
            return
        self.wfile.write(chunk)


class FixtureServer(NamedTuple):
    state: ServerState
    port: int

    def url(self, prefix: str = "data") -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}/"


@pytest.fixture
def server(fixture_data: FixtureData):
    state = ServerState(files=dict(fixture_data.files))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FixtureServer(state, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"


# --------------------------------------------------------------------------------------------
# Running the script
# --------------------------------------------------------------------------------------------
def run_script(
    dest: Path, base_urls: str, fixture_data: FixtureData, **overrides: str
) -> subprocess.CompletedProcess:
    """Run ``bash data_download.sh DEST`` against the fixture server; returns the finished process."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        CURL_HOME=str(dest.parent),  # no user ~/.curlrc
        ISIC2016_BASE_URLS=base_urls,
        ISIC2016_EXPECT_TRAIN=str(N_TRAIN),
        ISIC2016_EXPECT_TEST=str(N_TEST),
        ISIC2016_SHA256_TRAIN_ZIP=sha256(fixture_data.files[TRAIN_ZIP]),
        ISIC2016_SHA256_TRAIN_CSV=sha256(fixture_data.files[TRAIN_CSV]),
    )
    env.update(overrides)
    return subprocess.run(
        ["bash", str(SCRIPT), str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def assert_complete(dest: Path, data: FixtureData) -> None:
    """DEST holds exactly the loader's layout with the fixture's images and labels, no leftovers."""
    assert sorted(p.name for p in dest.iterdir()) == sorted([TRAIN_DIR, TEST_DIR, TRAIN_CSV, TEST_CSV])
    for folder, images in ((TRAIN_DIR, data.train_images), (TEST_DIR, data.test_images)):
        files = sorted(p.name for p in (dest / folder).iterdir())
        assert files == sorted(f"{k}.jpg" for k in images)  # no __MACOSX, no ._ files, no .part
        for image_id, content in images.items():
            assert (dest / folder / f"{image_id}.jpg").read_bytes() == content
    assert (dest / TRAIN_CSV).read_bytes() == data.files[TRAIN_CSV]
    assert (dest / TEST_CSV).read_bytes() == data.files[TEST_CSV]
    assert len((dest / TRAIN_CSV).read_text().splitlines()) == N_TRAIN
    assert len((dest / TEST_CSV).read_text().splitlines()) == N_TEST


def data_entries(dest: Path) -> list[str]:
    """Names in DEST that the loader could read (everything but the hidden .download folder)."""
    return sorted(p.name for p in dest.iterdir() if p.name != ".download") if dest.exists() else []


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
def test_success_layout_and_second_run_is_noop(tmp_path, server, fixture_data):
    dest = tmp_path / "isic data"  # a space in the path: the script must quote every variable
    result = run_script(dest, server.url(), fixture_data)
    assert result.returncode == 0, result.stderr
    assert_complete(dest, fixture_data)
    assert not (dest / ".download").exists()  # no .part, zip or extraction folder left behind
    assert "SHA-256 ok" in result.stderr
    assert len(server.state.log) == 4  # one request per file

    n_requests = len(server.state.log)
    again = run_script(dest, server.url(), fixture_data)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert len(server.state.log) == n_requests  # no HTTP request at all
    assert_complete(dest, fixture_data)


@pytest.mark.parametrize("first", ["404", "closed port"])
def test_falls_back_to_second_base_url(tmp_path, server, fixture_data, first):
    dest = tmp_path / "isic"
    first_url = server.url("gone") if first == "404" else closed_port_url()
    result = run_script(dest, f"{first_url} {server.url()}", fixture_data)
    assert result.returncode == 0, result.stderr
    assert_complete(dest, fixture_data)
    for name in (TRAIN_ZIP, TRAIN_CSV, TEST_ZIP, TEST_CSV):
        paths = [path for path, _ in server.state.requests_for(name)]
        expected = ["/gone/" + name, "/data/" + name] if first == "404" else ["/data/" + name]
        assert paths == expected


@pytest.mark.parametrize(
    "variable, name", [("ISIC2016_SHA256_TRAIN_ZIP", TRAIN_ZIP), ("ISIC2016_SHA256_TRAIN_CSV", TRAIN_CSV)]
)
def test_checksum_mismatch_fails_and_deletes_download(tmp_path, server, fixture_data, variable, name):
    dest = tmp_path / "isic"
    wrong = "ab" * 32
    result = run_script(dest, server.url(), fixture_data, **{variable: wrong})
    assert result.returncode != 0
    assert "SHA-256 mismatch" in result.stderr and name in result.stderr
    assert wrong in result.stderr  # expected hash
    assert sha256(fixture_data.files[name]) in result.stderr  # actual hash
    assert data_entries(dest) == []  # in particular no ISBI2016_ISIC_Part3_Training_Data
    assert not (dest / ".download" / name).exists() and not (dest / ".download" / f"{name}.part").exists()


def test_checksum_check_can_be_skipped(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    result = run_script(
        dest, server.url(), fixture_data, ISIC2016_SHA256_TRAIN_ZIP="", ISIC2016_SHA256_TRAIN_CSV=""
    )
    assert result.returncode == 0, result.stderr
    assert "SHA-256 ok" not in result.stderr
    assert_complete(dest, fixture_data)


def test_interrupted_download_resumes(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    half = len(fixture_data.files[TRAIN_ZIP]) // 2
    server.state.cut_after[TRAIN_ZIP] = half

    first = run_script(dest, server.url(), fixture_data)
    assert first.returncode != 0
    assert TRAIN_ZIP in first.stderr and "resume" in first.stderr
    assert data_entries(dest) == []  # nothing the loader could take for data
    assert (dest / ".download" / f"{TRAIN_ZIP}.part").stat().st_size == half

    second = run_script(dest, server.url(), fixture_data)
    assert second.returncode == 0, second.stderr
    assert_complete(dest, fixture_data)
    ranges = [rng for _, rng in server.state.requests_for(TRAIN_ZIP)]
    assert len(ranges) == 2 and ranges[0] is None
    match = re.fullmatch(r"bytes=(\d+)-", ranges[1] or "")
    assert match and int(match.group(1)) == half > 0
    # Files completed in the first run are not fetched again.
    assert len(server.state.requests_for(TRAIN_CSV)) == 1


@pytest.mark.parametrize("server_kind", ["ignores Range", "answers 416"])
def test_restarts_cleanly_when_server_cannot_resume(tmp_path, server, fixture_data, server_kind):
    dest = tmp_path / "isic"
    size = len(fixture_data.files[TRAIN_ZIP])
    # A leftover .part of garbage: appending to it would corrupt the zip (and fail the hash).
    (dest / ".download").mkdir(parents=True)
    leftover = size // 2 if server_kind == "ignores Range" else size + 10
    (dest / ".download" / f"{TRAIN_ZIP}.part").write_bytes(b"\x00" * leftover)
    server.state.ignore_range = server_kind == "ignores Range"

    result = run_script(dest, server.url(), fixture_data)
    assert result.returncode == 0, result.stderr
    assert "restarting" in result.stderr
    assert_complete(dest, fixture_data)
    assert [rng for _, rng in server.state.requests_for(TRAIN_ZIP)] == [f"bytes={leftover}-", None]


def test_offline_fails_with_advice(tmp_path, fixture_data):
    dest = tmp_path / "isic"
    url = closed_port_url()
    result = run_script(dest, url, fixture_data)
    assert result.returncode != 0
    err = result.stderr
    assert f"could not download {TRAIN_CSV}" in err  # the first file it tries
    assert url + TRAIN_CSV in err  # the URL it tried
    assert "SyntheticLesions" in err and 'make_loaders(source="synthetic")' in err
    assert "internet connection" in err and "challenge.isic-archive.com" in err
    assert data_entries(dest) == []
    assert not (dest / ".download").exists()


def test_zip_with_fewer_images_than_expected_fails(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    # A CSV that lists 6 images, so the CSV passes and the 5-image zip is the file that fails.
    csv6 = fixture_data.files[TRAIN_CSV] + b"ISIC_0000099,benign\n"
    server.state.files[TRAIN_CSV] = csv6
    result = run_script(
        dest, server.url(), fixture_data, ISIC2016_EXPECT_TRAIN="6", ISIC2016_SHA256_TRAIN_CSV=sha256(csv6)
    )
    assert result.returncode != 0
    assert f"{TRAIN_ZIP} holds 5 JPEG images, expected 6" in result.stderr
    assert "ISIC2016_EXPECT_TRAIN=6" in result.stderr
    assert data_entries(dest) == []
    assert not (dest / ".download" / TRAIN_ZIP).exists()  # the bad download is deleted


def test_csv_with_fewer_rows_than_expected_fails(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    result = run_script(dest, server.url(), fixture_data, ISIC2016_EXPECT_TEST="4")
    assert result.returncode != 0
    assert f"{TEST_CSV} has 3 label rows, expected 4" in result.stderr
    assert data_entries(dest) == []


def test_images_and_labels_must_match(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    wrong_ids = fixture_data.files[TEST_CSV].replace(b"ISIC_0000100", b"ISIC_0000999")
    server.state.files[TEST_CSV] = wrong_ids
    result = run_script(dest, server.url(), fixture_data)
    assert result.returncode != 0
    assert "ISIC_0000999" in result.stderr and "no image" in result.stderr
    assert data_entries(dest) == []


def test_existing_incomplete_folder_is_reported_not_replaced(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    (dest / TRAIN_DIR).mkdir(parents=True)
    (dest / TRAIN_DIR / "ISIC_0000000.jpg").write_bytes(fixture_data.train_images["ISIC_0000000"])
    result = run_script(dest, server.url(), fixture_data)
    assert result.returncode != 0
    assert "holds 1 JPEG images, expected 5" in result.stderr and "remove it" in result.stderr
    assert [p.name for p in (dest / TRAIN_DIR).iterdir()] == ["ISIC_0000000.jpg"]  # untouched
    assert server.state.log == []


def test_zip_placed_by_hand_is_used_without_download(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    dest.mkdir()
    (dest / TRAIN_ZIP).write_bytes(fixture_data.files[TRAIN_ZIP])
    result = run_script(dest, server.url(), fixture_data)
    assert result.returncode == 0, result.stderr
    assert server.state.requests_for(TRAIN_ZIP) == []
    assert (dest / TRAIN_ZIP).exists()  # the user's file is left alone
    (dest / TRAIN_ZIP).unlink()
    assert_complete(dest, fixture_data)


def test_bad_settings_are_rejected(tmp_path, fixture_data):
    dest = tmp_path / "isic"
    url = closed_port_url()
    bad_count = run_script(dest, url, fixture_data, ISIC2016_EXPECT_TRAIN="many")
    assert bad_count.returncode == 2 and "ISIC2016_EXPECT_TRAIN" in bad_count.stderr
    bad_hash = run_script(dest, url, fixture_data, ISIC2016_SHA256_TRAIN_ZIP="xyz")
    assert bad_hash.returncode == 2 and "ISIC2016_SHA256_TRAIN_ZIP" in bad_hash.stderr
    bad_option = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert bad_option.returncode == 2 and "--frobnicate" in bad_option.stderr


def test_help_documents_usage_and_environment():
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    out = result.stdout
    for variable in (
        "ISIC2016_BASE_URLS",
        "ISIC2016_EXPECT_TRAIN",
        "ISIC2016_EXPECT_TEST",
        "ISIC2016_SHA256_TRAIN_ZIP",
        "ISIC2016_SHA256_TRAIN_CSV",
    ):
        assert variable in out
    assert "Usage:" in out and "isic-cli" in out and "--collections 74" in out
    assert "arXiv:1605.01397" in out and "SyntheticLesions" in out
    assert "https://isic-archive.s3.amazonaws.com/challenges/2016/" in out
