"""Test configuration shared by every suite.

Without a GPU the Triton kernels run in the interpreter, which must be switched on before triton
is first imported: that is done here, before any test module imports pyvidgen.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the duration of the block."""
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def on_one_and_more_threads(run: Callable[[], tuple]) -> tuple[tuple, tuple]:
    """``run()`` with one intra-op thread and with at least two; the thread count is restored."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(max(2, threads))
        multi = run()
    finally:
        torch.set_num_threads(threads)
    return single, multi
