"""Outputs of more than 32 MiB from the C++ ops: right values, and transparent huge pages requested.

Such a tensor was a fresh mmap on every call (glibc's largest mmap threshold is 32 MiB), and faulting
it in 4 KiB pages cost more than the kernels that fill it (csrc/ops/outputs.h). The ops now take large
outputs from a cache of their own (tests/ops/test_output_cache.py) and ask for huge pages on each new
block of more than 32 MiB, which Linux records as the ``hg`` flag of the mapping in /proc/self/smaps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import pyvidgen
from pyvidgen.ops import flow_warp, multiplicative_unit
from tests.conftest import kernel_backends

pytestmark = pytest.mark.skipif("cpp" not in kernel_backends(), reason="the C++ extension is not built")

SMAPS = Path("/proc/self/smaps")


def _mapping_flags(address: int) -> set[str] | None:
    """The VmFlags of the mapping holding ``address``, None where /proc/self/smaps does not say."""
    inside = False
    for line in SMAPS.read_text().splitlines():
        head = line.split()[0] if line else ""
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            return set(line.split()[1:])
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux") or not SMAPS.exists(), reason="Linux /proc/self/smaps")
def test_outputs_over_32_mib_request_huge_pages_and_stay_right():
    x = torch.randn(1, 1, 3000, 3000)  # 34.3 MiB: over the threshold
    flow = torch.zeros(1, 2, 3000, 3000)
    flow[0, 0, :, :1500] = 1.0  # the left half samples one column to the right
    with pyvidgen.backend("cpp"):
        out = flow_warp(x, flow)
    torch.testing.assert_close(out[..., :1500], x[..., 1:1501], rtol=0, atol=0)
    torch.testing.assert_close(out[..., 1500:], x[..., 1500:], rtol=0, atol=0)
    flags = _mapping_flags(out.data_ptr() + out.nbytes // 2)
    if flags is None:
        pytest.skip("/proc/self/smaps has no VmFlags")
    assert "hg" in flags, f"no huge-page advice on a {out.nbytes >> 20} MiB output: VmFlags {sorted(flags)}"


def test_multiplicative_unit_over_32_mib_matches_the_reference(rng):
    pre = torch.randn(1, 4, 2100, 2100, generator=rng)
    h = torch.randn(1, 1, 2100, 2100, generator=rng)  # grad_pre 67 MiB, out and grad_h 16.8 MiB
    pre.requires_grad_()
    h.requires_grad_()
    grad_out = torch.randn(1, 1, 2100, 2100, generator=rng)
    results = {}
    for name in ("reference", "cpp"):
        with pyvidgen.backend(name):
            out = multiplicative_unit(pre, h)
            results[name] = (out.detach(), *torch.autograd.grad(out, (pre, h), grad_out))
    for got, wanted in zip(results["cpp"], results["reference"], strict=True):
        torch.testing.assert_close(got, wanted)
