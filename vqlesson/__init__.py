"""vqlesson: a notebook course on discrete generative modelling of dermoscopy images.

VQ-VAE (van den Oord et al. 2017), VQ-VAE-2 (Razavi et al. 2019) and PixelCNN priors
(van den Oord et al. 2016) over their codes, on ISIC 2016 or an offline synthetic lesion set.
The models live here; the notebooks in ``notebooks/`` import them.
"""

from .runtime import get_device, seed_everything

from .profiles import Profile, get_profile

__version__ = "0.1.0"
__all__ = ["Profile", "get_device", "get_profile", "seed_everything", "__version__"]
