"""Synthetic data sets generated on the fly, and loaders for standard files a user already has."""

from pyvidgen.data.binarized_digits import BinarizedDigits
from pyvidgen.data.mnist_images import MNISTImages
from pyvidgen.data.moving_digits import MovingDigits, digit_glyphs
from pyvidgen.data.moving_mnist_file import MovingMNISTFile, load_mnist_idx

__all__ = ["BinarizedDigits", "MNISTImages", "MovingDigits", "MovingMNISTFile", "digit_glyphs", "load_mnist_idx"]
