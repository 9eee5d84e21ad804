"""DiffusionCT: CT image standardization across reconstruction kernels with a latent diffusion model."""

__version__ = "0.1.0"

from diffusionct.errors import DiffusionCTError

__all__ = ["DiffusionCTError", "__version__"]
