"""The C++ ops' cache of large output memory (pyvidgen.output_cache; csrc/ops/output_cache.cpp).

Outputs of 4 MiB or more reuse the memory of freed ones of the same rounded size, so that a training
step does not fault fresh pages in every iteration. What must hold: reused memory never shows through
(every output is fully written), the idle memory stays under its limit, small outputs are left to
torch, and a cached tensor behaves as any other.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import threading

import pytest
import torch

import pyvidgen
import pyvidgen.output_cache as output_cache
from pyvidgen._backend import available_backends
from pyvidgen.ops import flow_warp, multiplicative_unit

pytestmark = pytest.mark.skipif(
    bool(available_backends("cpu")["cpp"]), reason="the C++ extension is not built (nothing to cache)"
)

MIB = 1 << 20
# 1 x 1 x 1100 x 1100 float32: 4.6 MiB, over the 4 MiB threshold; its block is rounded up to 6 MiB.
LARGE = (1, 1, 1100, 1100)
BLOCK = 6 * MIB


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache at the default limit, torch's own allocator, and leaves it so."""
    limit = pyvidgen.output_cache_info()["limit_bytes"]
    pyvidgen.empty_output_cache()
    yield
    gc.collect()
    pyvidgen.set_cache_all_cpu_tensors(False)
    pyvidgen.set_output_cache_limit(limit)
    pyvidgen.empty_output_cache()


def _warp(x: torch.Tensor) -> torch.Tensor:
    """flow_warp on the cpp backend with zero flow: a fresh output of x's size equal to x."""
    with pyvidgen.backend("cpp"):
        return flow_warp(x, torch.zeros(x.shape[0], 2, *x.shape[2:]))


def test_a_freed_output_is_reused_and_fully_overwritten(rng):
    pre = torch.randn(*LARGE[:1], 4, *LARGE[2:], generator=rng, requires_grad=True)
    h = torch.randn(LARGE, generator=rng, requires_grad=True)
    grad_out = torch.randn(LARGE, generator=rng)
    with pyvidgen.backend("reference"):
        wanted = multiplicative_unit(pre, h)
        wanted_grads = torch.autograd.grad(wanted, (pre, h), grad_out)
    with pyvidgen.backend("cpp"):
        first = multiplicative_unit(pre, h)
        grads = torch.autograd.grad(first, (pre, h), grad_out)
        for out in (first, *grads):
            out.detach().fill_(float("nan"))  # what a reuse would show if any element were left unwritten
        before = pyvidgen.output_cache_info()
        del first, grads, out
        second = multiplicative_unit(pre, h)
        second_grads = torch.autograd.grad(second, (pre, h), grad_out)
    after = pyvidgen.output_cache_info()
    assert after["hits"] >= before["hits"] + 3, (before, after)  # the output and both gradients
    torch.testing.assert_close(second, wanted)
    for got, expected in zip(second_grads, wanted_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_the_most_recently_freed_block_of_the_size_is_taken(rng):
    x = torch.randn(LARGE, generator=rng)
    first = _warp(x)
    address = first.data_ptr()
    del first
    again = _warp(x)
    assert again.data_ptr() == address
    torch.testing.assert_close(again, x, rtol=0, atol=0)


def test_small_outputs_are_left_to_torch(rng):
    x = torch.randn(2, 3, 64, 64, generator=rng)  # 96 KiB
    before = pyvidgen.output_cache_info()
    out = _warp(x)
    del out
    assert pyvidgen.output_cache_info() == before


def test_idle_memory_stays_under_the_limit_and_the_oldest_goes_first(rng):
    pyvidgen.set_output_cache_limit(2 * BLOCK)
    a, b, c = (_warp(torch.randn(LARGE, generator=rng)) for _ in range(3))
    addresses = [t.data_ptr() for t in (a, b, c)]
    del a, b, c  # freed in this order: a is the oldest idle block, and the third block pushes it out
    info = pyvidgen.output_cache_info()
    assert info["idle_blocks"] == 2 and info["idle_bytes"] == 2 * BLOCK <= info["limit_bytes"]
    assert _warp(torch.randn(LARGE, generator=rng)).data_ptr() == addresses[2]  # the most recently freed
    pyvidgen.set_output_cache_limit(0)
    assert pyvidgen.output_cache_info()["idle_bytes"] == 0
    out = _warp(torch.randn(LARGE, generator=rng))
    del out
    assert pyvidgen.output_cache_info()["idle_blocks"] == 0


def test_empty_output_cache_frees_idle_blocks_only(rng):
    x = torch.randn(LARGE, generator=rng)
    kept, freed = _warp(x), _warp(x)
    del freed
    assert pyvidgen.output_cache_info()["idle_blocks"] == 1
    pyvidgen.empty_output_cache()
    assert pyvidgen.output_cache_info()["idle_bytes"] == 0
    torch.testing.assert_close(kept, x, rtol=0, atol=0)  # in use: untouched
    del kept
    assert pyvidgen.output_cache_info()["idle_blocks"] == 1


def test_a_cached_output_behaves_like_any_tensor(rng, tmp_path):
    x = torch.randn(LARGE, generator=rng)
    out = _warp(x)
    assert out.is_contiguous() and out.device.type == "cpu"
    array = out.numpy()  # shares the memory
    array[0, 0, 0, 0] = 7.0
    assert out[0, 0, 0, 0].item() == 7.0
    out[0, 0, 0, 0] = x[0, 0, 0, 0]
    path = tmp_path / "out.pt"
    torch.save(out, path)
    torch.testing.assert_close(torch.load(path), x, rtol=0, atol=0)
    torch.testing.assert_close(pickle.loads(pickle.dumps(out)), x, rtol=0, atol=0)
    del array
    grown = _warp(x)
    grown.resize_(2, 1, 1100, 1100)  # a new, larger block through the same allocator
    grown[1] = grown[0]
    torch.testing.assert_close(grown[1], x[0], rtol=0, atol=0)
    shared = _warp(x).share_memory_()
    torch.testing.assert_close(shared, x, rtol=0, atol=0)


def test_an_output_freed_on_another_thread_returns_to_the_cache(rng):
    holder = [_warp(torch.randn(LARGE, generator=rng))]
    thread = threading.Thread(target=holder.clear)
    thread.start()
    thread.join()
    assert pyvidgen.output_cache_info()["idle_blocks"] == 1


def _limit_in_subprocess(value: str) -> subprocess.CompletedProcess:
    code = (
        "import torch, pyvidgen\n"
        "from pyvidgen.ops import flow_warp\n"
        "with pyvidgen.backend('cpp'):\n"
        "    flow_warp(torch.zeros(1, 1, 1100, 1100), torch.zeros(1, 2, 1100, 1100))\n"
        "print(pyvidgen.output_cache_info()['limit_bytes'])\n"
    )
    env = {**os.environ, "PYVIDGEN_OUTPUT_CACHE_MB": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_environment_sets_the_limit_and_a_bad_value_warns():
    done = _limit_in_subprocess("0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"
    done = _limit_in_subprocess("12")
    assert done.stdout.split()[-1] == str(12 * MIB), done.stderr
    done = _limit_in_subprocess("lots")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0
    assert "PYVIDGEN_OUTPUT_CACHE_MB must be a whole number of MiB >= 0, got 'lots'" in done.stderr


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_set_output_cache_limit_rejects_what_is_not_a_byte_count(bad):
    with pytest.raises(ValueError, match=r"limit_bytes must be an int >= 0, got"):
        pyvidgen.set_output_cache_limit(bad)


def test_without_the_extension_the_api_reports_nothing_cached(monkeypatch):
    monkeypatch.setattr(output_cache, "_load_cpp", lambda: (None, "not built"))
    fields = ("limit_bytes", "idle_bytes", "idle_blocks", "hits", "misses", "all_cpu_tensors")
    assert pyvidgen.output_cache_info() == dict.fromkeys(fields, 0)
    pyvidgen.set_output_cache_limit(0)
    pyvidgen.empty_output_cache()
    pyvidgen.set_cache_all_cpu_tensors(False)
    with pytest.raises(RuntimeError, match="set_cache_all_cpu_tensors: the output cache is part of the C"):
        pyvidgen.set_cache_all_cpu_tensors(True)


# ---------------------------------------------------------------------------------- every CPU tensor (opt-in)


def test_caching_all_cpu_tensors_serves_torch_s_own_tensors_until_turned_off():
    big = torch.empty(LARGE)
    assert pyvidgen.output_cache_info()["idle_blocks"] == 0
    del big  # made by torch's allocator: not the cache's
    assert pyvidgen.output_cache_info()["idle_blocks"] == 0
    with pyvidgen.cache_all_cpu_tensors():
        assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 1
        first = torch.full(LARGE, float("nan"))
        address = first.data_ptr()
        small = torch.ones(3, 5)  # below the threshold: torch's way, freed by the same allocator
        del first
        again = torch.zeros(LARGE)
        assert again.data_ptr() == address and torch.count_nonzero(again).item() == 0
    assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 0
    del again, small  # made while on, freed while off: back to the cache, the small one to the system
    assert pyvidgen.output_cache_info()["idle_blocks"] == 1
    after = torch.empty(LARGE)
    assert after.data_ptr() != address  # torch's allocator again


@pytest.mark.parametrize("cached", [False, True])
def test_convolutions_and_training_steps_agree_with_the_cache_on(cached, rng):
    # oneDNN takes its scratch memory through the CPU allocator's raw interface; a conv of 4+ MiB tensors
    # and its backward exercise both paths.
    x = torch.randn(4, 16, 128, 128, generator=rng)  # 4 MiB
    weight = torch.randn(32, 16, 3, 3, generator=rng)
    results = []
    for on in (False, cached):
        with pyvidgen.cache_all_cpu_tensors(on):
            xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
            y = torch.nn.functional.conv2d(xs, ws, padding=1)
            y.square().sum().backward()
            results.append((y.detach(), xs.grad, ws.grad))
    for got, wanted in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, wanted, rtol=0, atol=0)


def test_cache_all_cpu_tensors_restores_the_state_it_found():
    with pyvidgen.cache_all_cpu_tensors():
        with pyvidgen.cache_all_cpu_tensors(False):
            assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 0
        assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 1
        with pytest.raises(KeyError), pyvidgen.cache_all_cpu_tensors():
            raise KeyError("inside")
        assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 1
    assert pyvidgen.output_cache_info()["all_cpu_tensors"] == 0


@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_set_cache_all_cpu_tensors_rejects_what_is_not_a_bool(bad):
    with pytest.raises(ValueError, match="enabled must be a bool, got"):
        pyvidgen.set_cache_all_cpu_tensors(bad)
