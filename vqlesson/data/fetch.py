"""One file from a list of mirror URLs: resumable, SHA-256 checked, through pooch.

:func:`fetch_file` hands each URL to ``pooch.retrieve``, which downloads into a temporary file,
checks the SHA-256 and moves the file into place only when it matches (else deletes it). Pooch
has neither mirrors nor resume, so this module adds both: the URLs are tried in order (a network
error is first retried on the same URL), and :class:`ResumableDownloader`, pooch's downloader
here, keeps the bytes of an interrupted transfer in ``NAME.part`` and asks for the rest with an
HTTP Range request. :mod:`vqlesson.data.download` uses it for ISIC 2016.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

__all__ = ["DownloadError", "ResumableDownloader", "VerificationError", "fetch_file"]

LOGGER = logging.getLogger("vqlesson")
CHUNK_BYTES = 1 << 16  # read size; at most this much of an interrupted transfer is lost


class DownloadError(ConnectionError):
    """A file could not be fetched from any of the URLs tried (the message lists them)."""


class VerificationError(ValueError):
    """A file fetched, found or installed fails its SHA-256, count or id check."""


def _continues(response, offset: int) -> bool:
    """True when ``response`` is a 206 whose Content-Range starts at byte ``offset``."""
    if response.status_code != 206:
        return False
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return bool(match) and int(match.group(1)) == offset


class ResumableDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that resumes interrupted
    transfers.

    The body is written to ``part``, which outlives a failed call: the next call asks for the
    rest with ``Range: bytes=N-``. A server that answers 200 (it ignores Range) is read from byte
    0; one that answers 416, or a range that starts elsewhere, is asked again without Range. When
    the body is complete (``Content-Length`` bytes), ``part`` is moved onto pooch's temporary
    ``output_file``; pooch then checks the SHA-256 and moves it into place, or deletes it.

    Args:
        part: the file that keeps the bytes received so far (e.g. ``STAGING/NAME.part``).
        progress: show a tqdm progress bar (bytes).
        timeout_s: seconds to wait for the connection and between chunks of data.

    Raises:
        requests.RequestException: HTTP errors (4xx/5xx), refused or lost connections, time-outs
            and a body shorter than announced (the bytes received are kept in ``part``).
    """

    def __init__(self, part: Path, progress: bool = True, timeout_s: float = 60.0) -> None:
        self.part, self.progress, self.timeout_s = Path(part), progress, timeout_s

    def _get(self, url: str, offset: int):
        import requests

        headers = {"Accept-Encoding": "identity"}  # the bytes as stored: hashes and sizes hold
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return requests.get(url, headers=headers, stream=True, timeout=self.timeout_s)

    def __call__(self, url: str, output_file: str, pooch=None) -> None:  # noqa: ARG002 - pooch API
        import requests

        offset = self.part.stat().st_size if self.part.exists() else 0
        response = self._get(url, offset)
        if offset and (response.status_code == 416
                       or (response.status_code == 206 and not _continues(response, offset))):
            response.close()  # the server cannot continue from there: start over
            LOGGER.warning("%s cannot be resumed from byte %d; restarting it from the beginning",
                           self.part.name, offset)
            response = self._get(url, 0)
        with response:
            response.raise_for_status()
            if response.status_code == 200 and offset:
                LOGGER.warning("the server ignored the resume request for %s; restarting it from "
                               "the beginning", self.part.name)
            start = offset if response.status_code == 206 else 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            try:
                self._write(response, start, total)
            except requests.RequestException as err:
                raise requests.ConnectionError(self._lost(total)) from err
        if total is not None and self.part.stat().st_size != total:
            raise requests.ConnectionError(self._lost(total))
        os.replace(self.part, output_file)

    def _lost(self, total: int | None) -> str:
        size = self.part.stat().st_size if self.part.exists() else 0
        return (f"connection lost after {size} of {total if total is not None else '?'} bytes "
                f"(kept in {self.part}; the next attempt resumes from there)")

    def _write(self, response, start: int, total: int | None) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        with open(self.part, "ab" if start else "wb") as fh, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, leave=False,
            desc=self.part.name.removesuffix(".part"), disable=not self.progress,
        ) as bar:
            # Small chunks: the unfinished chunk is lost when a connection breaks.
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                fh.write(chunk)
                bar.update(len(chunk))


def _describe(err: Exception, timeout_s: float) -> str:
    """A short reason for a failed request, for the list of URLs tried."""
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP error {err.response.status_code}"
    if isinstance(err, requests.Timeout):
        return f"timed out (no data for {timeout_s:g} s)"
    if isinstance(err, requests.ConnectionError) and str(err).startswith("connection lost"):
        return str(err)
    if isinstance(err, requests.ConnectionError):
        return "could not connect to the server (offline, DNS, proxy or firewall?)"
    return f"{type(err).__name__}: {err}"


def _try_url(url: str, name: str, folder: Path, sha256: str | None, retries: int,
             retry_wait_s: float, downloader: ResumableDownloader) -> str | None:
    """Fetch ``url`` into ``folder/name`` through pooch; ``None`` on success, else the reason.

    Network errors are retried ``retries`` times (each attempt resumes); an HTTP 4xx error or a
    SHA-256 mismatch (pooch has deleted the file) is final for this URL.
    """
    import pooch
    import requests

    reason = ""
    for attempt in range(1 + retries):
        if attempt:
            LOGGER.info("retrying %s (%s)", url, reason)
            time.sleep(retry_wait_s)
        try:
            pooch.retrieve(url, known_hash=sha256, fname=name, path=folder, downloader=downloader)
            return None
        except ValueError as err:  # pooch's SHA-256 mismatch
            return f"SHA-256 mismatch: {err}"
        except requests.RequestException as err:
            reason = _describe(err, downloader.timeout_s)
            response = getattr(err, "response", None)
            if response is not None and 400 <= response.status_code < 500:
                return reason
    return reason


def fetch_file(
    name: str,
    urls: Sequence[str],
    folder: str | os.PathLike,
    sha256: str | None,
    *,
    retries: int = 2,
    retry_wait_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """``folder/name``, downloaded from the first URL that gives it with the right SHA-256.

    A file already at ``folder/name`` with the right SHA-256 (any file, when ``sha256`` is
    ``None``) is returned without a request. Bytes of an interrupted transfer are kept in
    ``folder/name.part`` and the next attempt (or call) resumes from them.

    Args:
        name: the file name, in ``folder``.
        urls: the URLs of the same file, tried in order.
        folder: where the file goes (created when missing).
        sha256: its SHA-256 (64 hex digits), or ``None`` to take any file (pooch then logs it).
        retries: extra attempts on one URL after a network error.
        retry_wait_s: seconds to wait before such an attempt.
        timeout_s: seconds to wait for a connection or for data.
        progress: show a progress bar.

    Raises:
        VerificationError: every URL that answered gave a file with another SHA-256 (the file is
            deleted; the message lists expected and actual values).
        DownloadError: no URL gave the file; the message lists each URL with the reason and how
            many bytes are kept for a resume.
    """
    folder = Path(folder)
    part = folder / f"{name}.part"
    downloader = ResumableDownloader(part, progress, timeout_s)
    tried = []
    for url in urls:  # pooch logs each "Downloading data from URL to file PATH"
        reason = _try_url(url, name, folder, sha256, retries, retry_wait_s, downloader)
        if reason is None:
            return folder / name
        tried.append(f"  {url}: {reason}")
    listing = "\n".join(tried)
    if all("SHA-256 mismatch" in line for line in tried):
        raise VerificationError(f"{name} was refused: its SHA-256 is not the known one.\n{listing}")
    kept = part.stat().st_size if part.exists() else 0
    resume = f"\n{kept} bytes are kept in {part}; the next try resumes from there." if kept else ""
    raise DownloadError(f"could not download {name}. Tried:\n{listing}{resume}")
