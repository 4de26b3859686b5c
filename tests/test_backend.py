"""Backend selection: auto, explicit choice, context manager, environment variable, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import pyvidgen
from pyvidgen import _backend
from pyvidgen.ops import flow_warp


def test_default_is_auto_and_context_restores():
    assert pyvidgen.get_backend() == "auto"
    with pyvidgen.backend("reference"):
        assert pyvidgen.get_backend() == "reference"
        with pyvidgen.backend("auto"):
            assert pyvidgen.get_backend() == "auto"
        assert pyvidgen.get_backend() == "reference"
    assert pyvidgen.get_backend() == "auto"
    pyvidgen.set_backend("reference")
    assert pyvidgen.get_backend() == "reference"


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; expected one of auto, reference, cpp, triton"):
        pyvidgen.set_backend("cuda")
    with pytest.raises(ValueError, match=r"unknown backend"), pyvidgen.backend("fast"):
        pass


def test_auto_resolution_on_cpu():
    cpp_ok = not _backend.unavailable_reason("cpp", torch.device("cpu"))
    assert _backend.resolve("op", torch.device("cpu")) == ("cpp" if cpp_ok else "reference")
    # An op without a C++ kernel: auto quietly takes the reference.
    assert _backend.resolve("op", torch.device("cpu"), backends=("reference", "triton")) == "reference"


def test_explicit_unavailable_backend_says_why(monkeypatch):
    with pyvidgen.backend("cpp"), pytest.raises(RuntimeError, match=r"backend 'cpp' is unavailable: op has no cpp"):
        _backend.resolve("op", torch.device("cpu"), backends=("reference", "triton"))
    monkeypatch.setattr(_backend, "_load_cpp", lambda: (None, "_C was not built (test)"))
    with pyvidgen.backend("cpp"), pytest.raises(RuntimeError, match=r"backend 'cpp' is unavailable: _C was not built"):
        flow_warp(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))
    # auto falls back silently.
    assert flow_warp(torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)).sum() == 4
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pyvidgen.backend("triton"), pytest.raises(RuntimeError, match=r"triton backend needs CUDA tensors"):
        flow_warp(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))


@pytest.mark.skipif(not pyvidgen.available_backends("cpu")["cpp"] == "", reason="the C++ extension is not built")
def test_cpp_runs_half_inputs_as_float32_copies(rng):
    x = torch.randn(1, 3, 4, 5, generator=rng).half()
    flow = torch.randn(1, 2, 4, 5, generator=rng).half()
    with pyvidgen.backend("cpp"):
        out = flow_warp(x, flow)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, flow_warp(x.float(), flow.float()).half())


def test_available_backends_lists_every_backend():
    available = pyvidgen.available_backends("cpu")
    assert set(available) == {"reference", "cpp", "triton"}
    assert available["reference"] == ""


def test_environment_variable_sets_default():
    code = "import pyvidgen; print(pyvidgen.get_backend())"
    env = dict(os.environ, PYVIDGEN_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
    env["PYVIDGEN_BACKEND"] = "bogus"
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pyvidgen, torch; pyvidgen.ops.flow_warp(torch.zeros(1,1,2,2), torch.zeros(1,2,2,2))",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown backend 'bogus'" in bad.stderr


def test_backends_agree_through_public_api(rng):
    x = torch.randn(2, 3, 8, 9, generator=rng)
    flow = torch.randn(2, 2, 8, 9, generator=rng) * 2
    with pyvidgen.backend("reference"):
        expected = flow_warp(x, flow)
    torch.testing.assert_close(flow_warp(x, flow), expected)


def test_extension_override():
    """PYVIDGEN_EXTENSION loads that build of _C (`make sanitize` points it at the instrumented one)."""
    path = os.environ.get("PYVIDGEN_EXTENSION")
    if path:
        assert os.path.samefile(_backend.cpp_module().__file__, path)
    code = "import pyvidgen; print(pyvidgen.available_backends('cpu')['cpp'])"
    env = dict(os.environ, PYVIDGEN_EXTENSION="/nonexistent/_C.so")
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "PYVIDGEN_EXTENSION='/nonexistent/_C.so' is not an extension module file" in out.stdout
