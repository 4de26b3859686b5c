"""Test configuration shared by every suite.

Without a GPU the Triton kernels run in the interpreter, which must be switched on before triton
is first imported: that is done here, before any test module imports pyvidgen.
"""

from __future__ import annotations

import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import pyvidgen  # noqa: E402
from pyvidgen._backend import available_backends  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def kernel_backends() -> list[str]:
    """The non-reference backends that can run on this machine's test device."""
    return [name for name, why in available_backends(DEVICE).items() if name != "reference" and not why]


@pytest.fixture(autouse=True)
def _restore_backend():
    """Every test starts on "auto" and cannot leak a backend choice into the next."""
    pyvidgen.set_backend("auto")
    yield
    pyvidgen.set_backend("auto")


@pytest.fixture
def rng(request) -> torch.Generator:
    """A generator seeded from the test id and a per-run salt, so each run draws fresh inputs.

    The seed is printed on failure (pytest shows captured output), so a failure can be replayed
    with PYVIDGEN_TEST_SEED.
    """
    salt = int(os.environ.get("PYVIDGEN_TEST_SEED", str(int.from_bytes(os.urandom(4), "little"))))
    seed = (zlib.crc32(request.node.nodeid.encode()) ^ salt) & 0x7FFFFFFF
    print(f"seed: PYVIDGEN_TEST_SEED={salt} (test seed {seed})")
    return torch.Generator().manual_seed(seed)
