"""The C++ ops' cache of large output memory.

A large tensor made afresh costs a page fault per 4 KiB page the first time it is written: glibc maps
every allocation of 32 MiB or more anew (and often trims or remaps smaller ones), so a training step
that makes the same large outputs every iteration used to fault them all in every time. On a 2-core
CPU that made the multiplicative unit's forward and backward at 16x128x32x32 (a 32 MiB gradient) four
times slower than its kernels. The C++ ops (backend "cpp") therefore take outputs of 4 MiB or more
from a cache of their own: when such an output is freed its memory waits, up to a limit, for the next
output of the same size (rounded up to 2 MiB). Smaller outputs, and every tensor torch itself makes,
use torch's allocator as before.

The limit is an eighth of the machine's memory (1 GiB where that is unknown). The environment variable
``PYVIDGEN_OUTPUT_CACHE_MB`` (a whole number of MiB, read the first time an op uses the cache; 0 turns
the cache off) or :func:`set_output_cache_limit` change it; :func:`empty_output_cache` frees what the
cache holds. Without the compiled extension there is nothing to cache: the info is all zeros, and the
other functions do nothing (turning the cache on for every CPU tensor raises).

Opt-in, :func:`set_cache_all_cpu_tensors` makes the same cache torch's CPU allocator, so that every CPU
tensor of 4 MiB or more reuses freed memory, torch's own (convolution outputs, pooling indices,
gradients) as well as the ops'. An eager training step that makes tensors of tens of MiB every
iteration gains from it: the small ST-AE's step on the fused ops measured 382-477 -> 344-346 ms (2
threads, separate processes; its 38 MB convolution outputs and gradients no longer fault). It changes
where every CPU tensor's memory comes from for the whole process, which is why it is not the default;
the ``pyvidgen train`` command turns it on for its own process (``--no-cpu-tensor-cache`` leaves
torch's allocator).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyvidgen._backend import _load_cpp

_FIELDS = ("limit_bytes", "idle_bytes", "idle_blocks", "hits", "misses", "all_cpu_tensors")


def output_cache_info() -> dict[str, int]:
    """What the cache holds and has done since the extension loaded.

    Returns:
        ``limit_bytes`` (most bytes of idle blocks kept), ``idle_bytes`` and ``idle_blocks`` (freed outputs
        waiting for reuse), ``hits`` (allocations that reused a block), ``misses`` (allocations that took new
        memory), ``all_cpu_tensors`` (1 while :func:`set_cache_all_cpu_tensors` has it serve every CPU tensor).
    """
    module, _ = _load_cpp()
    if module is None:
        return dict.fromkeys(_FIELDS, 0)
    return {**module.output_cache_info(), "all_cpu_tensors": int(module.cache_all_cpu_tensors())}


def set_output_cache_limit(limit_bytes: int) -> None:
    """Keep at most ``limit_bytes`` of idle output memory (0: keep none); frees the oldest idle blocks over it."""
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 0:
        raise ValueError(f"set_output_cache_limit: limit_bytes must be an int >= 0, got {limit_bytes!r}")
    module, _ = _load_cpp()
    if module is not None:
        module.set_output_cache_limit(limit_bytes)


def empty_output_cache() -> None:
    """Free every idle block of the cache (outputs still in use keep their memory)."""
    module, _ = _load_cpp()
    if module is not None:
        module.empty_output_cache()


def set_cache_all_cpu_tensors(enabled: bool) -> None:
    """Serve every CPU tensor of 4 MiB or more from the cache (True), or give torch its allocator back (False).

    Process-wide; tensors keep the memory they were made with, so switching is safe at any time. Small tensors
    take memory as torch's default allocator does. Raises RuntimeError when turning it on without the compiled
    extension.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"set_cache_all_cpu_tensors: enabled must be a bool, got {enabled!r}")
    module, why = _load_cpp()
    if module is None:
        if enabled:
            raise RuntimeError(f"set_cache_all_cpu_tensors: the output cache is part of the C++ extension: {why}")
        return
    module.set_cache_all_cpu_tensors(enabled)


@contextlib.contextmanager
def cache_all_cpu_tensors(enabled: bool = True) -> Iterator[None]:
    """:func:`set_cache_all_cpu_tensors` for the ``with`` block, then back to what it was."""
    before = bool(output_cache_info()["all_cpu_tensors"])
    set_cache_all_cpu_tensors(enabled)
    try:
        yield
    finally:
        set_cache_all_cpu_tensors(before)
