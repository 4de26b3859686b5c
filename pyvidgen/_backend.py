"""Backend selection: which implementation (reference, cpp, triton) an op runs on.

``auto`` (the default) picks the fastest available for the tensors' device: CUDA -> triton,
CPU -> cpp, otherwise reference, silently. Naming a backend explicitly (``set_backend``, the
``backend`` context manager or ``PYVIDGEN_BACKEND``) makes an unavailable one an error that says why.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("auto", "reference", "cpp", "triton")

# Process-wide, not thread-local: autograd runs CUDA backward passes on its own threads, which
# must see the same choice as the forward.
_chosen: list[str | None] = [None]


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def _default() -> str:
    return _validate(os.environ.get("PYVIDGEN_BACKEND", "auto") or "auto")


def get_backend() -> str:
    """The backend in force: the last set_backend/backend choice, else PYVIDGEN_BACKEND, else "auto"."""
    name = _chosen[0]
    return name if name is not None else _default()


def set_backend(name: str) -> None:
    """Set the backend for the process: "auto", "reference", "cpp" or "triton"."""
    _chosen[0] = _validate(name)


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager: ``with pyvidgen.backend("reference"): ...`` restores the previous choice on exit."""
    previous = _chosen[0]
    _chosen[0] = _validate(name)
    try:
        yield
    finally:
        _chosen[0] = previous


@functools.cache
def _load_cpp() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("pyvidgen._C")
    except ImportError as exc:
        return None, (
            f"_C was not built or does not load ({exc}); reinstall with a C++ compiler and "
            "`pip install --no-build-isolation -e .`, or run `make build`"
        )
    return module, ""


@functools.cache
def _load_triton() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc}); `pip install triton`"
    return True, ""


def triton_interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cpp_module() -> ModuleType:
    """The compiled extension ``pyvidgen._C``; raises RuntimeError saying why it is missing."""
    module, why = _load_cpp()
    if module is None:
        raise RuntimeError(f"backend 'cpp' is unavailable: {why}")
    return module


def unavailable_reason(name: str, device: torch.device) -> str:
    """Empty string if backend ``name`` can run on ``device``, else the reason it cannot."""
    if name == "reference":
        return ""
    if name == "cpp":
        if device.type != "cpu":
            return f"the cpp backend runs on CPU tensors, got tensors on {device}"
        return _load_cpp()[1]
    if name == "triton":
        ok, why = _load_triton()
        if not ok:
            return why
        if device.type == "cuda":
            return ""
        if device.type == "cpu" and triton_interpreted():
            return ""
        return f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device}"
    return f"unknown backend {name!r}"


def available_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """Map each concrete backend to "" if usable on ``device`` or to the reason it is not."""
    device = torch.device(device)
    return {name: unavailable_reason(name, device) for name in BACKENDS[1:]}


def _cpp_reason(device: torch.device, entry: str | None) -> str:
    why = unavailable_reason("cpp", device)
    if not why and entry is not None and not hasattr(_load_cpp()[0], entry):
        why = f"this build of _C has no {entry}; rebuild it (`make build`)"
    return why


# Dtypes each compiled backend has kernels for; the reference takes every floating dtype.
_KERNEL_DTYPES = {
    "cpp": (torch.float32, torch.float64),
    "triton": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}


def resolve(
    op: str, device: torch.device, dtype: torch.dtype, *, atomics_ok: bool = True, cpp_entry: str | None = None
) -> str:
    """The concrete backend ``op`` runs on for tensors of ``dtype`` on ``device``.

    Args:
        op: the op's name, for error messages.
        device: the device of the op's tensors.
        dtype: their dtype.
        atomics_ok: False when the kernel about to run scatters with atomics (non-deterministic) and
            ``torch.are_deterministic_algorithms_enabled()``: ``auto`` then avoids triton, and an explicit
            "triton" raises.
        cpp_entry: the function of ``pyvidgen._C`` the op needs; a build without it (older sources)
            counts as cpp being unavailable for this op.

    Raises:
        RuntimeError: an explicitly chosen backend cannot run these tensors; the message says why.
    """
    name = get_backend()
    if name == "auto":
        if device.type == "cuda" and atomics_ok and not unavailable_reason("triton", device):
            if dtype in _KERNEL_DTYPES["triton"]:
                return "triton"
        if device.type == "cpu" and dtype in _KERNEL_DTYPES["cpp"] and not _cpp_reason(device, cpp_entry):
            return "cpp"
        return "reference"
    why = _cpp_reason(device, cpp_entry) if name == "cpp" else unavailable_reason(name, device)
    if not why and name in _KERNEL_DTYPES and dtype not in _KERNEL_DTYPES[name]:
        supported = ", ".join(str(d).removeprefix("torch.") for d in _KERNEL_DTYPES[name])
        why = f"it has kernels for {supported}, got {str(dtype).removeprefix('torch.')}"
    if not why and name == "triton" and not atomics_ok:
        why = (
            "its kernel accumulates with atomic adds, which is not deterministic, and "
            "torch.are_deterministic_algorithms_enabled() is True; use backend 'reference' or 'auto'"
        )
    if why:
        raise RuntimeError(f"{op}: backend {name!r} is unavailable: {why}")
    return name
