"""Image files: decoding and cleaning, and the resize cache of a data set.

Real files are decoded once: the first use resizes every image (centre crop to a square, then an
antialiased resize to S x S) into a cache beside the data, keyed by the image size and rebuilt
when the source files change (:func:`cached_images`). Cleaning rules for every file
(:func:`load_rgb`): EXIF orientation is applied; greyscale, RGBA, palette, 16-bit and CMYK images
become RGB (transparency is composited on black, the colour of the dermoscope's surround); an
unreadable or truncated file raises :class:`CorruptImageError` naming it, or with
``on_error="skip"`` is left out with one warning that counts and names the skipped files
(:func:`warn_skipped`). The data sets of :mod:`vqlesson.data` read their images through here.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..checkpoint import atomic_torch_save

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CACHE_DIRNAME = ".vqlesson_cache"
CACHE_FORMAT = 1


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (unreadable, truncated or not an image)."""


# --------------------------------------------------------------------------------------------
# Decoding and cleaning one file
# --------------------------------------------------------------------------------------------
def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on black; 16/32-bit greys are rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_rgb(path: str | os.PathLike, size: int | None = None) -> Image.Image:
    """Decode one image file into a cleaned RGB PIL image.

    Args:
        path: an image file (JPEG, PNG, BMP, ...).
        size: when given, the image is centre-cropped to a square and resized (antialiased) to
            ``size x size`` pixels; large JPEGs are decoded at reduced scale first (much faster).

    Returns:
        A PIL image in mode ``"RGB"``, EXIF orientation applied.

    Raises:
        CorruptImageError: the file cannot be decoded or is truncated (the message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                img.draft("RGB", (size, size))  # DCT-domain downscale, keeps both sides >= size
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            if size is not None:
                img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
            return img
    except Image.DecompressionBombError as err:  # PIL refuses to decode it: not an OSError
        raise CorruptImageError(
            f"cannot read image {path}: it declares more pixels than PIL decodes safely "
            f"({err}); a decompression bomb or a broken header. Replace or delete the file, or "
            f"pass on_error='skip' (--on-error skip) to leave it out."
        ) from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptImageError(
            f"cannot read image {path}: {err}. Replace or delete the file (re-run "
            f"data_download.sh for ISIC 2016), or pass on_error='skip' (--on-error skip) to "
            f"leave it out."
        ) from err


def _image_to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor."""
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def _raw_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, after EXIF orientation; (0, 0) if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
            return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return (0, 0)


# --------------------------------------------------------------------------------------------
# The resize cache
# --------------------------------------------------------------------------------------------
def _fingerprint(files: Sequence[Path], extra: bytes = b"") -> str:
    """A hash of every file's path, size and modification time (cheap: no reading)."""
    digest = hashlib.sha256(extra)
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_file(root: Path, name: str, image_size: int) -> Path:
    """``ROOT/.vqlesson_cache/NAME_Spx.pt``, or a user cache folder if ROOT is read-only."""
    local = root / CACHE_DIRNAME
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local / f"{name}_{image_size}px.pt"
    except OSError:
        pass
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vqlesson" / key
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback / f"{name}_{image_size}px.pt"


def _decode_all(
    files: Sequence[Path], image_size: int, on_error: str, desc: str
) -> tuple[torch.Tensor, list[int], list[str], list[tuple[int, int]]]:
    """Decode and resize every file in parallel threads (PIL releases the GIL while decoding).

    Returns (images (N_ok, 3, S, S) uint8, indices of the files kept, names skipped, raw sizes).

    Raises:
        CorruptImageError: with ``on_error="raise"``, after every file was tried: one error
            that names every unreadable file (not only the first).
    """
    def work(path: Path):
        try:
            return _image_to_uint8_tensor(load_rgb(path, image_size)), None
        except CorruptImageError as err:
            return None, err

    images, kept, skipped, errors = [], [], [], []
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(work, files)
        for i, (tensor, err) in enumerate(
            tqdm(results, total=len(files), desc=desc, unit="img", leave=False)
        ):
            if tensor is None:
                skipped.append(files[i].name)
                errors.append(err)
            else:
                images.append(tensor)
                kept.append(i)
    if errors and on_error == "raise":
        raise _all_unreadable(errors, files[0].parent)
    raw_sizes = [_raw_size(files[i]) for i in kept]
    stacked = (
        torch.stack(images) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    )
    return stacked, kept, skipped, raw_sizes


def _all_unreadable(errors: Sequence[CorruptImageError], where: Path) -> CorruptImageError:
    """One error for every unreadable file of a folder (the single file's own error when there
    is one)."""
    if len(errors) == 1:
        return errors[0]
    reasons = "\n  ".join(str(e).split(". Replace")[0].removeprefix("cannot read image ")
                          for e in errors)
    return CorruptImageError(
        f"cannot read {len(errors)} images below {where}:\n  {reasons}\nReplace or delete "
        f"these files (re-run data_download.sh for ISIC 2016), or pass on_error='skip' "
        f"(--on-error skip) to leave them out."
    )


def cached_images(
    root: Path, name: str, files: Sequence[Path], image_size: int, on_error: str, extra: bytes = b""
) -> dict:
    """The resized images of ``files``, from the cache when it is current, else built and stored.

    Returns a dict with ``images`` (N, 3, S, S) uint8, ``kept`` (indices into ``files``),
    ``skipped`` (file names) and ``raw_sizes`` ((width, height) per kept file).
    """
    fingerprint = _fingerprint(files, extra)
    path = _cache_file(root, name, image_size)
    if path.exists():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if (
                cached.get("format") == CACHE_FORMAT
                and cached.get("fingerprint") == fingerprint
                and cached.get("on_error") == on_error
            ):
                return cached
        except Exception:  # noqa: BLE001 - an unreadable cache is simply rebuilt
            pass
    images, kept, skipped, raw_sizes = _decode_all(
        files, image_size, on_error, desc=f"Resizing {name} to {image_size} px (once, cached)"
    )
    cached = {
        "format": CACHE_FORMAT, "fingerprint": fingerprint, "on_error": on_error,
        "images": images, "kept": kept, "skipped": skipped, "raw_sizes": raw_sizes,
    }
    try:
        atomic_torch_save(cached, path)
    except OSError as err:
        warnings.warn(f"could not write the image cache {path}: {err}; images will be decoded again "
                      "next time", stacklevel=3)
    return cached


def warn_skipped(skipped: Sequence[str], where: Path) -> None:
    """One warning for the files left out (``on_error="skip"``) below ``where``: their number
    and the first ten names; nothing when ``skipped`` is empty."""
    if skipped:
        shown = ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) in {where}: {shown}", stacklevel=3
        )
