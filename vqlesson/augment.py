"""Augmentations for dermoscopy images, built from ``torchvision.transforms.v2``.

The course discusses five augmentations that student reports used (random resized crop, flips,
rotation, colour jitter, Gaussian noise). Each is a switch in :class:`AugmentConfig`, with
defaults suited to dermoscopy:

- Flips and rotations by multiples of 90° are *safe*: a lesion seen through a dermoscope has no
  canonical orientation, and these map the square image onto itself, so nothing is invented.
  Rotation by any other angle fills the corners with black, and a *generative* model then learns
  to draw those corners: it is off by default (``rotation_degrees``) and shown in notebook 01.
- A random resized crop is safe when it is mild (scale near 1): a tight crop can cut the border
  of the lesion away, and border irregularity is one of the ABCD criteria.
- Colour jitter must stay *mild*: colour is diagnostic (the C of ABCD; blue-grey and dark brown
  areas matter), so strong hue or saturation changes make a benign lesion look like another
  lesion. Hue is left untouched by default.
- Gaussian noise: a VQ-VAE that must reconstruct noise wastes codes on it, and a generative model
  learns to draw it; off by default (``noise_sigma``).

The defaults are notebook 01's table for a generative model: mild crop, flips, rotations by
multiples of 90°, mild colour jitter without hue, no noise, no black fill.

Contract: every transform here works on a float image tensor ``(3, S, S)`` in ``[0, 1]`` (the
datasets apply it before their final mapping to ``[-1, 1]``), and returns the same shape and range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision.transforms import v2

from .validate import check_number


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, and how strongly. ``0``/``False`` switches one off.

    Attributes:
        random_resized_crop: crop a random area and resize it back to the image size.
        crop_scale: (min, max) fraction of the image area kept by the crop.
        crop_ratio: (min, max) aspect ratio of the crop.
        hflip: random horizontal flip (p = 0.5).
        vflip: random vertical flip (p = 0.5).
        rotate90: rotation by a random multiple of 90° (0, 90, 180 or 270, equally likely).
        rotation_degrees: rotation by any angle drawn uniformly from [-d, d] degrees, corners
            filled with black; 0 (the default) disables it.
        brightness, contrast, saturation, hue: ``ColorJitter`` strengths; all 0 disables it.
        noise_sigma: standard deviation of additive Gaussian noise on the [0, 1] scale; 0 disables.
    """

    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    hflip: bool = True
    vflip: bool = True
    rotate90: bool = True
    rotation_degrees: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.05
    hue: float = 0.0
    noise_sigma: float = 0.0

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every augmentation switched off."""
        return cls(
            random_resized_crop=False, hflip=False, vflip=False, rotate90=False,
            rotation_degrees=0.0,
            brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, noise_sigma=0.0,
        )

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        check_number(self.hue, "hue", 0, 0.5)
        for name in ("rotation_degrees", "brightness", "contrast", "saturation", "noise_sigma"):
            check_number(getattr(self, name), name, 0)


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90° (each of 0, 90, 180, 270 with probability 1/4), drawn
    from torch's global generator like torchvision's transforms. ``(3, S, S) -> (3, S, S)``: a
    square maps onto itself, so no pixel is invented (no fill, no interpolation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, ()))
        return torch.rot90(x, k, dims=(-2, -1))


def build_transforms(config: AugmentConfig | None, image_size: int) -> v2.Compose | None:
    """A ``v2.Compose`` of the augmentations switched on in ``config`` (``None`` if none are).

    Args:
        config: the switches; ``None`` means no augmentation.
        image_size: side S of the square images, used by the resized crop.

    Returns:
        A callable mapping ``(3, S, S)`` float in [0, 1] to ``(3, S, S)`` float in [0, 1].
    """
    if config is None:
        return None
    steps: list[torch.nn.Module] = []
    if config.random_resized_crop:
        steps.append(
            v2.RandomResizedCrop(
                image_size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True
            )
        )
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if config.vflip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    if config.rotate90:
        steps.append(RandomRot90())
    if config.rotation_degrees > 0:
        steps.append(
            v2.RandomRotation(
                config.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0
            )
        )
    if any((config.brightness, config.contrast, config.saturation, config.hue)):
        steps.append(
            v2.ColorJitter(
                brightness=config.brightness or None,
                contrast=config.contrast or None,
                saturation=config.saturation or None,
                hue=config.hue or None,
            )
        )
    if config.noise_sigma > 0:
        steps.append(v2.GaussianNoise(sigma=config.noise_sigma, clip=True))
    if not steps:
        return None
    # Every step keeps [0, 1] (bilinear weights are non-negative, jitter and noise clip); the
    # datasets clamp once more before mapping to [-1, 1]. No lambdas: workers must pickle this.
    return v2.Compose(steps)


def augmentations_on(config: AugmentConfig) -> dict[str, bool]:
    """Whether ``config`` switches on each augmentation of :func:`single_augmentations`, under
    the same names (notebook 01 prints it beside its table: the defaults are the table's choice).
    """
    return {
        "random resized crop": config.random_resized_crop,
        "horizontal flip": config.hflip,
        "vertical flip": config.vflip,
        "rotation by 90°": config.rotate90,
        "rotation by any angle": config.rotation_degrees > 0,
        "colour jitter": any((config.brightness, config.contrast, config.saturation, config.hue)),
        "gaussian noise": config.noise_sigma > 0,
    }


def single_augmentations(config: AugmentConfig, image_size: int) -> dict[str, v2.Compose]:
    """Each augmentation of ``config`` on its own, by name, for the notebook's one-by-one figure
    (also those ``config`` switches off, at a typical strength: :func:`augmentations_on` says
    which are on)."""
    off = AugmentConfig.none()
    variants = {
        "random resized crop": replace(off, random_resized_crop=True, crop_scale=config.crop_scale,
                                       crop_ratio=config.crop_ratio),
        "horizontal flip": replace(off, hflip=True),
        "vertical flip": replace(off, vflip=True),
        "rotation by 90°": replace(off, rotate90=True),
        "rotation by any angle": replace(off, rotation_degrees=config.rotation_degrees or 180.0),
        "colour jitter": replace(off, brightness=config.brightness, contrast=config.contrast,
                                 saturation=config.saturation, hue=config.hue),
        "gaussian noise": replace(off, noise_sigma=config.noise_sigma or 0.05),
    }
    out = {}
    for name, cfg in variants.items():
        transform = build_transforms(cfg, image_size)
        if transform is not None:
            out[name] = transform
    return out
