"""Reference models of the papers, built from :mod:`pyvidgen.nn`."""

from pyvidgen.models.draw import DRAW, DRAWConfig, build_draw
from pyvidgen.models.vae import VAE, build_vae

__all__ = ["DRAW", "VAE", "DRAWConfig", "build_draw", "build_vae"]
