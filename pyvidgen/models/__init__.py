"""Reference models of the papers, built from :mod:`pyvidgen.nn`."""

from pyvidgen.models.vae import VAE, build_vae

__all__ = ["VAE", "build_vae"]
