"""Tests for vqlesson.data.download (ISIC 2016 Part 3, Gutman et al. 2016, arXiv:1605.01397), its
resumable fetch (vqlesson.data.fetch) and the data_download.sh wrapper.

Fixture data with the real file and folder names (5 training and 3 test JPEGs) is served by a
local HTTP server on 127.0.0.1, based on ``http.server``, that answers Range requests and can cut
a response off after N bytes, ignore Range, answer 404 for some URL prefixes or serve a corrupted
copy on one prefix (a bad mirror). It logs every request with its Range header, so the tests can
check that a second call sends no request and that a resumed download asks for ``bytes=N-``.
The downloader is pointed at the server and the fixture's hashes and counts through
:class:`IsicDownloadConfig` (the wrapper: ``--base-url`` and ``--config``).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
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

import numpy as np
import pytest
from PIL import Image

import vqlesson.data.download as download
from vqlesson.data import ISIC2016
from vqlesson.data.datasets import ISIC_FILES
from vqlesson.data.download import (
    DownloadError, IsicDownloadConfig, VerificationError, download_isic2016,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_download.sh"

TRAIN_ZIP = "ISBI2016_ISIC_Part3_Training_Data.zip"
TRAIN_CSV = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
TEST_ZIP = "ISBI2016_ISIC_Part3_Test_Data.zip"
TEST_CSV = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
TRAIN_DIR = "ISBI2016_ISIC_Part3_Training_Data"
TEST_DIR = "ISBI2016_ISIC_Part3_Test_Data"
ALL_FILES = (TRAIN_ZIP, TRAIN_CSV, TEST_ZIP, TEST_CSV)

N_TRAIN, N_TEST = 5, 3


# --------------------------------------------------------------------------------------------
# Fixture data
# --------------------------------------------------------------------------------------------
class FixtureData(NamedTuple):
    """Served files (name -> bytes) and the JPEG bytes each split's zip holds (id -> bytes)."""

    files: dict[str, bytes]
    train_images: dict[str, bytes]
    test_images: dict[str, bytes]


def _jpeg(seed: int, size: int = 48) -> bytes:
    """A small noisy RGB JPEG (noise keeps it large for its size: about 2 bytes per pixel)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
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
    # Training images of about 50 kB, so that a cut in the middle of the zip falls after the
    # downloader's first few 64 kB chunks and leaves bytes to resume from.
    train = {f"ISIC_{i:07d}": _jpeg(i, size=160) for i in range(N_TRAIN)}
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
    corrupt: (prefix, name) pairs served with their last byte changed (a bad mirror).
    log: (path, Range header or None) of every request, in order.
    """

    files: dict[str, bytes]
    ok_prefixes: set[str] = field(default_factory=lambda: {"data"})
    cut_after: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    corrupt: set[tuple[str, str]] = field(default_factory=set)
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
            if ok and (parts[0], parts[1]) in state.corrupt:
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
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
# Running the downloader
# --------------------------------------------------------------------------------------------
def fixture_config(data: FixtureData, *urls: str, **changes) -> IsicDownloadConfig:
    """The downloader's settings for the fixture data: its hashes and counts, fast retries."""
    values = dict(
        base_urls=urls, sha256={name: sha256(data.files[name]) for name in ALL_FILES},
        n_train=N_TRAIN, n_test=N_TEST, retries=0, retry_wait_s=0.0, timeout_s=10.0,
    )
    values.update(changes)
    return IsicDownloadConfig(**values)


def fetch(dest: Path, config: IsicDownloadConfig) -> Path:
    return download_isic2016(dest, config=config, progress=False)


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


def staging_of(dest: Path) -> Path:
    return dest.resolve().parent / f".{dest.name}.download"


def data_entries(dest: Path) -> list[str]:
    """Names in DEST (what the loader could take for data)."""
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --------------------------------------------------------------------------------------------
# Success, no-op, the loader
# --------------------------------------------------------------------------------------------
def test_layout_matches_the_loader():
    targets = {item.target for item in download.ISIC_DOWNLOADS}
    assert targets == {name for pair in ISIC_FILES.values() for name in pair}


def test_success_layout_and_second_call_is_noop(tmp_path, server, fixture_data):
    dest = tmp_path / "isic data"  # a space in the path
    assert fetch(dest, fixture_config(fixture_data, server.url())) == dest.resolve()
    assert_complete(dest, fixture_data)
    assert not staging_of(dest).exists()  # no .part, zip or extraction folder left behind
    assert len(server.state.log) == 4  # one request per file

    assert fetch(dest, fixture_config(fixture_data, server.url())) == dest.resolve()
    assert len(server.state.log) == 4  # no HTTP request at all
    assert_complete(dest, fixture_data)
    test = ISIC2016(dest, "test", image_size=16)
    assert test.image_ids == list(fixture_data.test_images) and test.labels.tolist() == [0, 1, 0]


def test_dataset_download_true_fetches_then_loads(tmp_path, server, fixture_data, monkeypatch):
    config = fixture_config(fixture_data, server.url())
    monkeypatch.setattr(download, "IsicDownloadConfig", lambda: config)  # the default settings
    dest = tmp_path / "isic2016"
    train = ISIC2016(dest, "train", image_size=16, val_fraction=0.0, download=True)
    assert len(train) == N_TRAIN and train.labels.tolist() == [0, 1, 0, 0, 1]
    assert len(server.state.log) == 4
    again = ISIC2016(dest, "test", image_size=16, download=True)
    assert len(again) == N_TEST and len(server.state.log) == 4  # in place: nothing fetched


def test_default_root_is_under_the_data_dir(tmp_path, server, fixture_data, monkeypatch):
    monkeypatch.setenv("VQLESSON_DATA_DIR", str(tmp_path / "store"))
    root = download_isic2016(config=fixture_config(fixture_data, server.url()), progress=False)
    assert root == (tmp_path / "store" / "isic2016").resolve()
    assert_complete(root, fixture_data)


def test_only_missing_parts_are_fetched_and_a_zip_placed_by_hand_is_used(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    fetch(dest, fixture_config(fixture_data, server.url()))
    shutil.rmtree(dest / TRAIN_DIR)
    (dest / TRAIN_ZIP).write_bytes(fixture_data.files[TRAIN_ZIP])  # e.g. fetched with a browser
    n_requests = len(server.state.log)
    fetch(dest, fixture_config(fixture_data, server.url()))
    assert len(server.state.log) == n_requests  # the zip by hand was used, nothing else needed
    assert (dest / TRAIN_ZIP).exists()  # the user's file is left alone
    (dest / TRAIN_ZIP).unlink()
    assert_complete(dest, fixture_data)


# --------------------------------------------------------------------------------------------
# Mirrors, hashes, resume
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["404", "closed port"])
def test_falls_back_to_the_second_base_url(tmp_path, server, fixture_data, first):
    dest = tmp_path / "isic"
    first_url = server.url("gone") if first == "404" else closed_port_url()
    fetch(dest, fixture_config(fixture_data, first_url, server.url(), retries=1))
    assert_complete(dest, fixture_data)
    for name in ALL_FILES:
        paths = [path for path, _ in server.state.requests_for(name)]
        assert paths == (["/gone/" + name, "/data/" + name] if first == "404" else ["/data/" + name])


def test_a_corrupted_mirror_is_refused_and_the_next_one_used(tmp_path, server, fixture_data):
    server.state.ok_prefixes.add("bad")
    server.state.corrupt.add(("bad", TRAIN_ZIP))
    dest = tmp_path / "isic"
    fetch(dest, fixture_config(fixture_data, server.url("bad"), server.url()))
    assert_complete(dest, fixture_data)
    paths = [p for p, _ in server.state.requests_for(TRAIN_ZIP)]
    assert paths == ["/bad/" + TRAIN_ZIP, "/data/" + TRAIN_ZIP]


@pytest.mark.parametrize("name", [TRAIN_ZIP, TEST_CSV])
def test_wrong_hash_is_refused_with_nothing_left_in_place(tmp_path, server, fixture_data, name):
    dest = tmp_path / "isic"
    wrong = "ab" * 32
    hashes = {n: sha256(fixture_data.files[n]) for n in ALL_FILES} | {name: wrong}
    with pytest.raises(VerificationError) as info:
        fetch(dest, fixture_config(fixture_data, server.url(), sha256=hashes))
    message = str(info.value)
    assert name in message and wrong in message and sha256(fixture_data.files[name]) in message
    assert "Nothing was installed" in message
    assert data_entries(dest) == []  # in particular no ISBI2016_ISIC_Part3_Training_Data
    staging = staging_of(dest)
    assert not (staging / name).exists() and not (staging / f"{name}.part").exists()


def kept_offset(range_header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
    assert match, range_header
    return int(match.group(1))


def test_interrupted_download_resumes_in_the_same_call(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    half = len(fixture_data.files[TRAIN_ZIP]) // 2
    server.state.cut_after[TRAIN_ZIP] = half
    fetch(dest, fixture_config(fixture_data, server.url(), retries=1))
    assert_complete(dest, fixture_data)
    ranges = [rng for _, rng in server.state.requests_for(TRAIN_ZIP)]
    assert len(ranges) == 2 and ranges[0] is None
    assert 0 < kept_offset(ranges[1]) <= half  # the bytes received (whole chunks) were kept


def test_interrupted_download_resumes_in_the_next_call(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    half = len(fixture_data.files[TRAIN_ZIP]) // 2
    server.state.cut_after[TRAIN_ZIP] = half
    with pytest.raises(DownloadError) as info:
        fetch(dest, fixture_config(fixture_data, server.url()))
    assert "connection lost" in str(info.value) and "resumes" in str(info.value)
    assert data_entries(dest) == []  # nothing the loader could take for data
    kept = (staging_of(dest) / f"{TRAIN_ZIP}.part").stat().st_size
    assert 0 < kept <= half

    fetch(dest, fixture_config(fixture_data, server.url()))
    assert_complete(dest, fixture_data)
    assert [rng for _, rng in server.state.requests_for(TRAIN_ZIP)] == [None, f"bytes={kept}-"]
    assert len(server.state.requests_for(TRAIN_CSV)) == 1  # verified in the first call, kept


@pytest.mark.parametrize("server_kind", ["ignores Range", "answers 416"])
def test_restarts_cleanly_when_the_server_cannot_resume(tmp_path, server, fixture_data, server_kind):
    dest = tmp_path / "isic"
    size = len(fixture_data.files[TRAIN_ZIP])
    # A leftover .part of garbage: appending to it would corrupt the zip (and fail the hash).
    staging_of(dest).mkdir(parents=True)
    leftover = size // 2 if server_kind == "ignores Range" else size + 10
    (staging_of(dest) / f"{TRAIN_ZIP}.part").write_bytes(b"\x00" * leftover)
    server.state.ignore_range = server_kind == "ignores Range"
    fetch(dest, fixture_config(fixture_data, server.url()))
    assert_complete(dest, fixture_data)
    expected = [f"bytes={leftover}-"] + ([] if server_kind == "ignores Range" else [None])
    assert [rng for _, rng in server.state.requests_for(TRAIN_ZIP)] == expected


# --------------------------------------------------------------------------------------------
# Failures: offline, counts, ids, a wrong folder in place, bad settings
# --------------------------------------------------------------------------------------------
def test_offline_gives_a_clear_message(tmp_path, fixture_data):
    dest = tmp_path / "isic"
    url = closed_port_url()
    with pytest.raises(DownloadError) as info:
        fetch(dest, fixture_config(fixture_data, url, retries=1))
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert f"could not download {TRAIN_CSV}" in message  # the first file it tries
    assert url + TRAIN_CSV in message and "could not connect" in message  # the URL and why
    assert "internet connection" in message and "challenge.isic-archive.com" in message
    assert 'make_loaders(source="synthetic")' in message and str(dest.resolve()) in message
    assert data_entries(dest) == [] and not staging_of(dest).exists()


def test_zip_with_fewer_images_than_expected_fails(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    csv6 = fixture_data.files[TRAIN_CSV] + b"ISIC_0000099,benign\n"  # the CSV passes, the zip fails
    server.state.files[TRAIN_CSV] = csv6
    hashes = {n: sha256(fixture_data.files[n]) for n in ALL_FILES} | {TRAIN_CSV: sha256(csv6)}
    message = f"{TRAIN_ZIP} holds 5 JPEG images, expected 6 \\(n_train=6\\)"
    with pytest.raises(VerificationError, match=message):
        fetch(dest, fixture_config(fixture_data, server.url(), n_train=6, sha256=hashes))
    assert data_entries(dest) == []
    assert not (staging_of(dest) / TRAIN_ZIP).exists()  # the bad download is deleted


def test_csv_with_fewer_rows_than_expected_fails(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    with pytest.raises(VerificationError, match=f"{TEST_CSV} has 3 label rows, expected 4 \\(n_test=4\\)"):
        fetch(dest, fixture_config(fixture_data, server.url(), n_test=4))
    assert data_entries(dest) == []


def test_images_and_labels_must_match(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    wrong_ids = fixture_data.files[TEST_CSV].replace(b"ISIC_0000100", b"ISIC_0000999")
    server.state.files[TEST_CSV] = wrong_ids
    hashes = {n: sha256(fixture_data.files[n]) for n in ALL_FILES} | {TEST_CSV: sha256(wrong_ids)}
    with pytest.raises(VerificationError, match="ISIC_0000999.*no label.*ISIC_0000100"):
        fetch(dest, fixture_config(fixture_data, server.url(), sha256=hashes))
    assert data_entries(dest) == []


def test_an_incomplete_folder_in_place_is_reported_not_replaced(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    (dest / TRAIN_DIR).mkdir(parents=True)
    (dest / TRAIN_DIR / "ISIC_0000000.jpg").write_bytes(fixture_data.train_images["ISIC_0000000"])
    with pytest.raises(VerificationError, match="holds 1 JPEG images, expected 5.*Remove it"):
        fetch(dest, fixture_config(fixture_data, server.url()))
    assert [p.name for p in (dest / TRAIN_DIR).iterdir()] == ["ISIC_0000000.jpg"]  # untouched
    assert server.state.log == []


def test_bad_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="sha256 of .* 64 hex digits"):
        IsicDownloadConfig(sha256={TRAIN_ZIP: "xyz"})
    with pytest.raises(ValueError, match="unknown file"):
        IsicDownloadConfig(sha256={"other.zip": None})
    with pytest.raises(ValueError, match="n_train"):
        IsicDownloadConfig(n_train=0)
    with pytest.raises(ValueError, match="base_urls"):
        IsicDownloadConfig(base_urls=())
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"n_trian": 5}))
    with pytest.raises(ValueError, match="config.json"):
        IsicDownloadConfig.from_json(bad)


def test_default_config_knows_the_buckets_and_no_invented_hashes():
    config = IsicDownloadConfig()
    assert config.base_urls == ("https://isic-archive.s3.amazonaws.com/challenges/2016/",
                                "https://isic-challenge-data.s3.amazonaws.com/2016/")
    assert (config.n_train, config.n_test) == (900, 379)
    assert config.hash_of(TRAIN_ZIP) == "d78bd1de08511b514e58784c91fd2d8dab24e407cafd023a7debbceb9155ffb2"
    assert config.hash_of(TRAIN_CSV) == "0ffadd63b7cec650cddfbe5df54d1d3167453fe6004c2bbf05824184b0c4d405"


# --------------------------------------------------------------------------------------------
# The command line and the bash wrapper
# --------------------------------------------------------------------------------------------
def run_wrapper(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "VQLESSON_DATA_DIR"}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **(env_extra or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def write_config(path: Path, data: FixtureData) -> Path:
    path.write_text(json.dumps({
        "sha256": {name: sha256(data.files[name]) for name in ALL_FILES},
        "n_train": N_TRAIN, "n_test": N_TEST, "retries": 0,
    }))
    return path


@pytest.mark.skipif(shutil.which("bash") is None, reason="the wrapper needs bash")
def test_bash_wrapper_downloads_then_does_nothing(tmp_path, server, fixture_data):
    dest = tmp_path / "isic"
    config = write_config(tmp_path / "fixture.json", fixture_data)
    result = run_wrapper(str(dest), "--base-url", server.url(), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert_complete(dest, fixture_data)
    again = run_wrapper(str(dest), "--base-url", server.url(), "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and len(server.state.log) == 4


@pytest.mark.skipif(shutil.which("bash") is None, reason="the wrapper needs bash")
def test_bash_wrapper_default_root_and_offline(tmp_path, fixture_data):
    url = closed_port_url()
    config = write_config(tmp_path / "fixture.json", fixture_data)
    offline = run_wrapper("--base-url", url, "--config", str(config),
                          env_extra={"VQLESSON_DATA_DIR": str(tmp_path / "store")})
    assert offline.returncode == 1
    assert url + TRAIN_CSV in offline.stderr and "internet connection" in offline.stderr
    assert str(tmp_path / "store" / "isic2016") in offline.stderr  # the default root it used


def test_command_line_help_errors_and_exit_status(tmp_path, fixture_data, capsys):
    with pytest.raises(SystemExit) as usage:
        download.main(["--help"])
    assert usage.value.code == 0
    out = capsys.readouterr().out
    for text in ("--base-url", "--config", "--dataset", "arXiv:1605.01397", "synthetic"):
        assert text in out
    with pytest.raises(SystemExit) as bad:
        download.main(["--frobnicate"])
    assert bad.value.code == 2 and "--frobnicate" in capsys.readouterr().err
    config = write_config(tmp_path / "fixture.json", fixture_data)
    argv = [str(tmp_path / "isic"), "--base-url", closed_port_url(), "--config", str(config)]
    status = download.main(argv)
    assert status == 1 and "error: could not download" in capsys.readouterr().err


def test_the_course_command_downloads_then_does_nothing(tmp_path, server, fixture_data, capsys):
    from vqlesson.cli import main

    dest = tmp_path / "isic"
    config = write_config(tmp_path / "fixture.json", fixture_data)
    argv = ["download", str(dest), "--base-url", server.url(), "--config", str(config)]
    assert main(argv) == 0
    assert_complete(dest, fixture_data)
    assert f"data in place: {dest}" in capsys.readouterr().out
    assert main(argv) == 0 and len(server.state.log) == 4  # the second call fetched nothing
    offline = ["download", str(tmp_path / "other"), "--base-url", closed_port_url(),
               "--config", str(config)]
    assert main(offline) == 2  # a clear error, no traceback
    assert "could not download" in capsys.readouterr().err
