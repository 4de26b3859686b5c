"""Synthetic data sets generated on the fly, and loaders for standard files a user already has."""

from pyvidgen.data.binarized_digits import BinarizedDigits
from pyvidgen.data.mnist_images import MNISTImages
from pyvidgen.data.moving_digits import MovingDigits, digit_glyphs
from pyvidgen.data.moving_mnist_file import MovingMNISTFile, load_mnist_idx
from pyvidgen.data.shapes import SHAPE_CLASSES, Shapes, estimate_velocities, velocity_histogram, velocity_kl

__all__ = [
    "SHAPE_CLASSES",
    "BinarizedDigits",
    "MNISTImages",
    "MovingDigits",
    "MovingMNISTFile",
    "Shapes",
    "digit_glyphs",
    "estimate_velocities",
    "load_mnist_idx",
    "velocity_histogram",
    "velocity_kl",
]
