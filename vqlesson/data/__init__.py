"""The course's data: ISIC 2016, any image folder, CIFAR-10 and the synthetic lesions, as loaders.

One concern per module:

- :mod:`~vqlesson.data.datasets`: :class:`ISIC2016`, :class:`ImageFolderDataset` and
  :func:`make_loaders` (loaders for every source, sized by the profile);
- :mod:`~vqlesson.data.image_files`: decoding, cleaning and caching image files;
- :mod:`~vqlesson.data.synthetic` and :mod:`~vqlesson.data.synthetic_abcd`: the offline procedural
  lesions and the ABCD rule of their true outlines;
- :mod:`~vqlesson.data.cifar`: CIFAR-10 through torchvision;
- :mod:`~vqlesson.data.download` (``python -m vqlesson.data.download``) and
  :mod:`~vqlesson.data.fetch`: ISIC 2016 and CIFAR-10 downloads, verified and resumable.

``from vqlesson.data import make_loaders, ISIC2016`` is all a notebook needs.
"""

from .datasets import (
    CLASSES,
    DatasetNotFoundError,
    ImageFolderDataset,
    ISIC2016,
    Loaders,
    SyntheticLesions,
    default_isic_root,
    isic_available,
    make_loaders,
    read_isic_labels,
    to_model_range,
    to_unit_range,
)

__all__ = [
    "CLASSES", "DatasetNotFoundError", "ISIC2016", "ImageFolderDataset", "Loaders",
    "SyntheticLesions", "default_isic_root", "isic_available", "make_loaders",
    "read_isic_labels", "to_model_range", "to_unit_range",
]
