"""Getting the course's real data sets onto disk: ISIC 2016 Part 3 and CIFAR-10.

- :func:`download_isic2016`: the ISBI 2016 challenge, Part 3 "Lesion Classification" (Gutman et
  al., "Skin Lesion Analysis toward Melanoma Detection: A Challenge at ISBI 2016, hosted by the
  International Skin Imaging Collaboration (ISIC)", arXiv:1605.01397, 2016; CC-0): 900 training
  and 379 test dermoscopy JPEGs with benign/malignant labels, into the layout
  :class:`vqlesson.data.ISIC2016` reads::

      ROOT/ISBI2016_ISIC_Part3_Training_Data/*.jpg       900 JPEGs (ISIC_0000000.jpg ...)
      ROOT/ISBI2016_ISIC_Part3_Training_GroundTruth.csv   900 rows, no header: ISIC_0000000,benign
      ROOT/ISBI2016_ISIC_Part3_Test_Data/*.jpg           379 JPEGs
      ROOT/ISBI2016_ISIC_Part3_Test_GroundTruth.csv       379 rows, no header: ISIC_0000003,0.0

- :func:`download_cifar10`: CIFAR-10 (Krizhevsky 2009), the VQ-VAE paper's own image benchmark
  (van den Oord et al. 2017, arXiv:1711.00937, Sec. 4.1), through torchvision's ``CIFAR10``.

How ISIC 2016 is fetched: each file comes from :func:`vqlesson.data.fetch.fetch_file` (pooch with
a resuming downloader: SHA-256 checked, an interrupted transfer continued with an HTTP Range
request), trying ISIC's official challenge bucket first and the older archive bucket second; a
network error is retried on the same URL before the next one is tried. Everything is downloaded
and verified in a staging folder beside the target (``.ROOT.download``): SHA-256, image and row counts, and
that the images and labels of each split name the same ids. Only then are the zips unpacked
(JPEGs only) and moved into ROOT, so a failed run leaves nothing half-installed there. A call
that finds everything in place and verified downloads nothing.

``python -m vqlesson.data.download [ROOT]`` (and ``bash data_download.sh [ROOT]``) runs
:func:`download_isic2016` from the command line; ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from .fetch import DownloadError, VerificationError, fetch_file
from .paths import DATA_DIR_ENV, default_data_root, default_isic_root
from ..validate import check_int, check_number

__all__ = [
    "DATA_DIR_ENV", "DownloadError", "IsicDownloadConfig", "VerificationError",
    "add_download_arguments", "csv_ids", "default_data_root", "default_isic_root", "download_cifar10", "download_isic2016",
    "main", "run_download",
]

LOGGER = logging.getLogger("vqlesson")

OFFICIAL_BASE_URL = "https://isic-archive.s3.amazonaws.com/challenges/2016/"  # since Sept. 2025
ARCHIVE_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2016/"  # the older bucket
CHALLENGE_PAGE = "https://challenge.isic-archive.com/data/#2016"
CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

TRAIN_ZIP = "ISBI2016_ISIC_Part3_Training_Data.zip"
TRAIN_CSV = "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
TEST_ZIP = "ISBI2016_ISIC_Part3_Test_Data.zip"
TEST_CSV = "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"

# ISIC publishes no checksums. The two training values are third-party published ones (they were
# the defaults of the earlier bash downloader). No SHA-256 of the test files is known to this
# project yet: they are checked by image and row counts, zip CRCs and matching ids, and the
# SHA-256 of the downloaded file is logged so that it can be written here.
KNOWN_SHA256: dict[str, str | None] = {
    TRAIN_ZIP: "d78bd1de08511b514e58784c91fd2d8dab24e407cafd023a7debbceb9155ffb2",
    TRAIN_CSV: "0ffadd63b7cec650cddfbe5df54d1d3167453fe6004c2bbf05824184b0c4d405",
    TEST_ZIP: None,
    TEST_CSV: None,
}

ID_PATTERN = re.compile(r"ISIC_\d+")
LABEL_WORDS = frozenset({"benign", "malignant", "0", "1", "0.0", "1.0"})


class IsicFile(NamedTuple):
    """One published file: its name on the server, the split, and what the loader reads."""

    name: str
    split: str  # "train" or "test"
    target: str  # the folder a zip is unpacked into, or the CSV itself

    @property
    def is_zip(self) -> bool:
        return self.name.endswith(".zip")


# Order of work: the small CSVs first, so a bad connection or hash shows before the big zips.
ISIC_DOWNLOADS = (
    IsicFile(TRAIN_CSV, "train", TRAIN_CSV),
    IsicFile(TEST_CSV, "test", TEST_CSV),
    IsicFile(TRAIN_ZIP, "train", TRAIN_ZIP.removesuffix(".zip")),
    IsicFile(TEST_ZIP, "test", TEST_ZIP.removesuffix(".zip")),
)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IsicDownloadConfig:
    """Where ISIC 2016 Part 3 comes from and what a complete copy holds.

    Attributes:
        base_urls: base URLs tried in order for each file (official bucket, then the archive).
        sha256: file name -> expected SHA-256 (64 hex digits), or ``None`` where none is known;
            entries given are merged into the known ones.
        n_train, n_test: images (and label rows) of the training and test splits.
        retries: extra attempts on one URL after a network error (each resumes the transfer).
        retry_wait_s: seconds to wait before such an attempt.
        timeout_s: seconds to wait for a connection or for data before the attempt fails.
    """

    base_urls: tuple[str, ...] = (OFFICIAL_BASE_URL, ARCHIVE_BASE_URL)
    sha256: Mapping[str, str | None] = field(default_factory=lambda: dict(KNOWN_SHA256))
    n_train: int = 900
    n_test: int = 379
    retries: int = 2
    retry_wait_s: float = 2.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.base_urls, str) or not self.base_urls:
            raise ValueError(f"base_urls must be a non-empty sequence of URLs, got "
                             f"{self.base_urls!r}")
        object.__setattr__(self, "base_urls", tuple(self.base_urls))
        check_int(self.n_train, "n_train", 1)
        check_int(self.n_test, "n_test", 1)
        check_int(self.retries, "retries", 0)
        check_number(self.retry_wait_s, "retry_wait_s", 0, note="seconds")
        check_number(self.timeout_s, "timeout_s", 0, low_open=True, note="seconds")
        object.__setattr__(self, "sha256", {**KNOWN_SHA256, **self.sha256})
        for name, digest in self.sha256.items():
            if name not in KNOWN_SHA256:
                raise ValueError(f"sha256 names an unknown file {name!r}; known: "
                                 f"{', '.join(KNOWN_SHA256)}")
            if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(f"sha256 of {name} must be 64 hex digits or None, got {digest!r}")

    def expected(self, split: str) -> int:
        """Images and label rows of ``split`` (``"train"`` or ``"test"``)."""
        return self.n_train if split == "train" else self.n_test

    def hash_of(self, name: str) -> str | None:
        """The expected SHA-256 of file ``name`` (lower case), or ``None`` when none is known."""
        digest = self.sha256.get(name)
        return digest.lower() if digest else None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "IsicDownloadConfig":
        """A config from a JSON object whose keys are field names (the others keep their
        defaults). Raises ValueError naming the file for bad JSON or an unknown key."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the download config {path}: {err}") from err
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - names:
            raise ValueError(f"{path} must hold a JSON object with keys among {sorted(names)}")
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------
def _fetch(item: IsicFile, root: Path, staging: Path, config: IsicDownloadConfig,
           progress: bool) -> Path:
    """``staging/NAME`` downloaded and SHA-256 checked (:func:`vqlesson.data.fetch.fetch_file`),
    from each base URL in turn; its errors get what to do added."""
    urls = [base.rstrip("/") + "/" + item.name for base in config.base_urls]
    try:
        return fetch_file(item.name, urls, staging, config.hash_of(item.name),
                          retries=config.retries, retry_wait_s=config.retry_wait_s,
                          timeout_s=config.timeout_s, progress=progress)
    except VerificationError as err:
        raise VerificationError(
            f"{err}\nNothing was installed. If the file really changed upstream, give its new "
            "SHA-256 in a config file (python -m vqlesson.data.download --config FILE, see --help)."
        ) from err
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nWhat to do:\n"
            "  - check your internet connection (and proxy settings) and run the download again\n"
            f"  - or download the four ISIC 2016 Part 3 files by hand from {CHALLENGE_PAGE}\n"
            f"    into {root} and run the download again to verify and unpack them\n"
            "  - or work offline with the synthetic lesions, which need no download:\n"
            "    make_loaders(source=\"synthetic\") (SyntheticLesions)") from err


# --------------------------------------------------------------------------------------------
# Checks: CSV rows, zip members, installed folders
# --------------------------------------------------------------------------------------------
def _is_jpeg_name(name: str) -> bool:
    """A JPEG member or file name that is not macOS metadata (``__MACOSX/``, ``._x.jpg``)."""
    base = name.rsplit("/", 1)[-1]
    return ("__MACOSX/" not in f"/{name}" and not base.startswith("._")
            and base.lower().endswith((".jpg", ".jpeg")))


def csv_ids(path: Path) -> list[str]:
    """Image ids of an ISIC 2016 Part 3 ground-truth CSV, in file order.

    Rows are ``ISIC_<digits>,<label>`` with label benign/malignant/0/1/0.0/1.0; a first row that
    is not (a header) is skipped, blank rows are ignored.

    Raises:
        VerificationError: a bad row, a repeated id, or a file that is not UTF-8 (names the file
            and line).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise VerificationError(f"{path.name} is not a readable UTF-8 text file ({err})") from err
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        cells = [cell.strip() for cell in line.split(",")]
        if not "".join(cells):
            continue
        good = (ID_PATTERN.fullmatch(cells[0]) and len(cells) >= 2
                and cells[1].lower() in LABEL_WORDS)
        if not good and number == 1:
            continue  # a header row
        if not good:
            raise VerificationError(
                f"{path.name} line {number} is not 'ISIC_<digits>,<benign|malignant|0.0|1.0>': "
                f"{line[:80]!r}")
        ids.append(cells[0])
    if len(set(ids)) != len(ids):
        raise VerificationError(f"{path.name} names some images twice")
    return ids


def _zip_jpegs(path: Path) -> list[tuple[zipfile.ZipInfo, str]]:
    """The JPEG members of a zip with their flat file names (the zip's folders are dropped).

    Raises:
        VerificationError: not a readable zip, or two members with the same file name.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise VerificationError(f"{path.name} is not a readable zip file ({err})") from err
    seen: dict[str, str] = {}
    members = []
    for info in infos:
        if info.is_dir() or not _is_jpeg_name(info.filename):
            continue
        base = info.filename.rsplit("/", 1)[-1]
        if base in seen:
            raise VerificationError(
                f"{path.name} holds two images named {base} ({seen[base]} and {info.filename})")
        seen[base] = info.filename
        members.append((info, base))
    return members


def _image_ids(source: Path) -> set[str]:
    """Ids (file names without extension) of the JPEGs in a folder or zip."""
    if source.is_dir():
        names = [p.name for p in source.iterdir() if _is_jpeg_name(p.name)]
    else:
        names = [base for _, base in _zip_jpegs(source)]
    return {name.rsplit(".", 1)[0] for name in names}


def _check_count(what: str, found: int, expected: int, split: str) -> None:
    """Raise when ``found`` differs, e.g. "X.zip holds 5 JPEG images, expected 6 (n_train=6)"."""
    if found != expected:
        field_name = "n_train" if split == "train" else "n_test"
        raise VerificationError(
            what.format(found) + f", expected {expected} ({field_name}={expected})")


def _verify(item: IsicFile, path: Path, config: IsicDownloadConfig) -> None:
    """Counts of a fetched or hand-placed file: JPEGs in a zip, label rows in a CSV."""
    expected = config.expected(item.split)
    if item.is_zip:
        found = len(_zip_jpegs(path))
        _check_count(f"{item.name} holds {{}} JPEG images", found, expected, item.split)
    else:
        _check_count(f"{item.name} has {{}} label rows", len(csv_ids(path)), expected, item.split)


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _installed(root: Path, item: IsicFile, config: IsicDownloadConfig) -> bool:
    """True when ``item``'s target is in ROOT and passes its checks, False when it is absent.

    Raises:
        VerificationError: the target is there but wrong; it is left alone and the message says
            to remove it.
    """
    target = root / item.target
    if not target.exists():
        return False
    remove = f"Remove it ({target}) and run the download again."
    try:
        if item.is_zip:
            if not target.is_dir():
                raise VerificationError(f"{target} exists but is not a folder.")
            found = sum(1 for p in target.iterdir() if _is_jpeg_name(p.name))
            _check_count(f"{target} holds {{}} JPEG images", found, config.expected(item.split),
                         item.split)
        else:
            _verify(item, target, config)
            want = config.hash_of(item.name)
            if want is not None and _sha256(target) != want:
                raise VerificationError(f"{target} has the wrong SHA-256 (expected {want}).")
    except VerificationError as err:
        raise VerificationError(f"{err} {target.name} in {root} was not made by a complete "
                                f"download. {remove}") from err
    return True


# --------------------------------------------------------------------------------------------
# Obtaining, unpacking, installing
# --------------------------------------------------------------------------------------------
def _staging_dir(root: Path) -> Path:
    """Where downloads are kept and checked before anything goes into ROOT: ``.ROOT.download``
    beside it (same file system, so moving into place is a rename)."""
    return root.parent / f".{root.name}.download"


def _obtain(item: IsicFile, root: Path, staging: Path, config: IsicDownloadConfig,
            progress: bool) -> Path:
    """A verified copy of ``item``: a zip put into ROOT by hand, or a (finished) download."""
    by_hand = root / item.name
    if item.is_zip and by_hand.is_file():
        LOGGER.info("Found %s; not downloading it again", by_hand)
        want = config.hash_of(item.name)
        try:
            if want is not None and (got := _sha256(by_hand)) != want:
                raise VerificationError(
                    f"SHA-256 mismatch for {item.name}: expected {want}, got {got}")
            _verify(item, by_hand, config)
        except VerificationError as err:
            raise VerificationError(
                f"{err}. {by_hand} was put there by hand and is left in place: replace it or "
                "remove it, and run the download again.") from err
        return by_hand
    path = _fetch(item, root, staging, config, progress)
    try:
        _verify(item, path, config)
    except VerificationError as err:
        path.unlink()
        raise VerificationError(
            f"{err}. The bad download was deleted; nothing was installed.") from err
    digest = config.hash_of(item.name) or _sha256(path)
    LOGGER.info("Verified %s (SHA-256 %s%s)", item.name, digest,
                "" if config.hash_of(item.name) else ", no known value to compare with")
    return path


def _cross_check(split: str, sources: dict[str, Path], root: Path) -> None:
    """The images and labels of ``split`` must name the same ids."""
    zip_item = next(f for f in ISIC_DOWNLOADS if f.split == split and f.is_zip)
    csv_item = next(f for f in ISIC_DOWNLOADS if f.split == split and not f.is_zip)
    images = sources.get(zip_item.name, root / zip_item.target)
    labels = sources.get(csv_item.name, root / csv_item.target)
    have, want = _image_ids(images), set(csv_ids(labels))
    no_image, no_label = sorted(want - have), sorted(have - want)
    if no_image or no_label:
        raise VerificationError(
            f"{images.name} and {labels.name} do not match: {len(no_image)} labelled ids have no "
            f"image (e.g. {', '.join(no_image[:3]) or '-'}), {len(no_label)} images have no label "
            f"(e.g. {', '.join(no_label[:3]) or '-'}). Nothing was installed; delete "
            f"{_staging_dir(root)} and run the download again.")


def _unpack(path: Path, dest: Path, expected: int, split: str) -> None:
    """The JPEGs of zip ``path``, flattened into folder ``dest`` (each CRC-checked)."""
    dest.mkdir(parents=True)
    members = _zip_jpegs(path)
    with zipfile.ZipFile(path) as zf:
        for info, base in members:
            try:
                data = zf.read(info)  # checks the CRC-32
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise VerificationError(f"{path.name} is damaged: {info.filename} ({err})") from err
            if not data.startswith(b"\xff\xd8"):
                raise VerificationError(f"{path.name}: {info.filename} is not a JPEG image")
            (dest / base).write_bytes(data)
    _check_count(f"{path.name} gave {{}} JPEG images", len(members), expected, split)


def _install(root: Path, staging: Path, needed: Sequence[IsicFile], sources: dict[str, Path],
             config: IsicDownloadConfig) -> None:
    """Build every needed target in ``STAGING/install``, then move them into ROOT (one rename
    of the whole folder when ROOT does not exist yet, else one rename per target)."""
    build = staging / "install"
    build.mkdir()
    for item in needed:
        if item.is_zip:
            LOGGER.info("Unpacking %s ...", item.name)
            expected = config.expected(item.split)
            _unpack(sources[item.name], build / item.target, expected, item.split)
        else:
            shutil.copyfile(sources[item.name], build / item.target)
    if not root.exists():
        shutil.move(str(build), str(root))
    else:
        for item in needed:
            shutil.move(str(build / item.target), str(root / item.target))
    for item in needed:
        if sources[item.name].parent == root:
            LOGGER.info("Unpacked %s; you may delete that zip now", sources[item.name])


def download_isic2016(
    root: str | os.PathLike | None = None,
    *,
    config: IsicDownloadConfig | None = None,
    base_urls: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack ISIC 2016 Part 3 into ``root``; a no-op when it is there.

    Args:
        root: the data folder (default :func:`default_isic_root`); created when missing.
        config: URLs, known SHA-256 values and expected counts (default
            :class:`IsicDownloadConfig`).
        base_urls: base URLs to try in order instead of ``config.base_urls`` (a mirror you host,
            or a test server); each file is fetched from ``BASE_URL/FILE_NAME``.
        progress: show a progress bar per file.

    Returns:
        ``root``, holding the layout :class:`vqlesson.data.ISIC2016` reads (see the module doc).

    Raises:
        DownloadError: a file could not be fetched from any URL (offline, HTTP errors); the
            message names every URL tried and what to do. Bytes received are kept for a resume.
        VerificationError: a file has the wrong SHA-256, image or row count, or ids; or a target
            already in ROOT is wrong (it is left alone; the message says to remove it).
        OSError: ROOT or the staging folder beside it cannot be written.

    A zip put into ROOT by hand is used instead of being downloaded (and left there). Nothing
    in ROOT changes unless every missing file was fetched and verified. Call it from one process
    only (before data-parallel workers start): two calls at once would share the staging folder.
    """
    config = config or IsicDownloadConfig()
    if base_urls:
        config = replace(config, base_urls=tuple(base_urls))
    root = Path(root if root is not None else default_isic_root()).expanduser().resolve()
    needed = [item for item in ISIC_DOWNLOADS if not _installed(root, item, config)]
    if not needed:
        LOGGER.info("ISIC 2016 Part 3 is already in %s (%d training and %d test images with "
                    "labels); nothing to do", root, config.n_train, config.n_test)
        return root
    staging = _staging_dir(root)
    staging.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging / "install", ignore_errors=True)  # left by a run killed while unpacking
    try:
        sources = {item.name: _obtain(item, root, staging, config, progress) for item in needed}
        for split in sorted({item.split for item in needed}):
            _cross_check(split, sources, root)
        _install(root, staging, needed, sources, config)
    except BaseException:
        shutil.rmtree(staging / "install", ignore_errors=True)
        if not any(staging.iterdir()):
            staging.rmdir()
        raise
    shutil.rmtree(staging)
    LOGGER.info("ISIC 2016 Part 3 is in %s. Data: CC-0, ISIC; cite Gutman et al. 2016, "
                "arXiv:1605.01397.", root)
    return root


# --------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's downloader)
# --------------------------------------------------------------------------------------------
def download_cifar10(root: str | os.PathLike | None = None) -> Path:
    """Download CIFAR-10 with torchvision into ``root/cifar-10-batches-py``; a no-op when the
    files are there and their MD5 sums match.

    Args:
        root: the data folder (default :func:`default_data_root` of ``"cifar10"``).

    Returns:
        ``root``, which :func:`vqlesson.data.cifar.cifar10_splits` and
        ``make_loaders("cifar10", root=...)`` read. The 170 MB archive is deleted once unpacked.

    Raises:
        DownloadError: the archive could not be fetched (names the URL and what to do).
    """
    from urllib.error import URLError

    from torchvision.datasets import CIFAR10

    root = Path(root if root is not None else default_data_root("cifar10")).expanduser()
    by_hand = (f"download {CIFAR10.filename} by hand from {CIFAR_PAGE} into {root} and run this "
               "again to verify and unpack it")
    try:
        CIFAR10(str(root), train=True, download=True)  # checks the archive's and files' MD5
        CIFAR10(str(root), train=False)
    except (URLError, OSError) as err:
        raise DownloadError(f"could not download CIFAR-10 from {CIFAR10.url}: {err}. Check your "
                            f"internet connection and run this again, or {by_hand}.") from err
    except RuntimeError as err:  # torchvision: an MD5 sum that does not match
        raise VerificationError(
            f"CIFAR-10 in {root} is incomplete or corrupted ({err}); delete "
            f"{root / CIFAR10.base_folder} and run this again, or {by_hand}.") from err
    (root / CIFAR10.filename).unlink(missing_ok=True)
    return root


# --------------------------------------------------------------------------------------------
# Command line: python -m vqlesson.data.download [ROOT] (and bash data_download.sh [ROOT])
# --------------------------------------------------------------------------------------------
def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """The download command's arguments (shared by ``python -m vqlesson.data.download`` and the CLI)."""
    parser.add_argument("root", nargs="?", default=None,
                        help="data folder (default: $VQLESSON_DATA_DIR/NAME, else data/NAME, with "
                             "NAME isic2016 or cifar10)")
    parser.add_argument("--dataset", choices=("isic2016", "cifar10"), default="isic2016",
                        help="which data set (default isic2016: ISIC 2016 Part 3, about 830 MB; "
                             "cifar10: CIFAR-10 through torchvision, about 170 MB)")
    parser.add_argument("--base-url", action="append", default=None, metavar="URL",
                        help="ISIC 2016: a base URL to try instead of the defaults (repeat the "
                             f"option for several, tried in order); default {OFFICIAL_BASE_URL} "
                             f"then {ARCHIVE_BASE_URL}")
    parser.add_argument("--config", default=None, metavar="FILE.json",
                        help="ISIC 2016: a JSON object of IsicDownloadConfig fields (sha256, "
                             "n_train, n_test, retries, ...) for a mirror that serves other files")


def run_download(args: argparse.Namespace, progress: bool = True) -> Path:
    """Run the download that ``args`` (from :func:`add_download_arguments`) describe."""
    if args.dataset == "cifar10":
        if args.base_url or args.config:
            raise ValueError("--base-url and --config are for ISIC 2016 only; CIFAR-10 comes from "
                             "torchvision's URL")
        return download_cifar10(args.root)
    config = IsicDownloadConfig.from_json(args.config) if args.config else None
    return download_isic2016(args.root, config=config, base_urls=args.base_url, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vqlesson.data.download``: exit 0 when the data is in place, 1 when it is not,
    2 for bad arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m vqlesson.data.download",
        description="Download ISIC 2016 Part 3 (Gutman et al. 2016, arXiv:1605.01397, CC-0) into "
                    "the layout vqlesson.data.ISIC2016 reads, verified by SHA-256 and image "
                    "counts; resumes an interrupted download; does nothing when the data is "
                    "already in place. --dataset cifar10 fetches CIFAR-10 instead. Without "
                    f"internet: download the four files by hand from {CHALLENGE_PAGE} into ROOT "
                    "and run this to verify and unpack them, or use the offline synthetic "
                    "lesions (make_loaders(source='synthetic')).")
    add_download_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        root = run_download(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.dataset} is ready in {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
