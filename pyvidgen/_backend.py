"""Backend selection: which implementation (reference, cpp, triton) an op runs on.

``auto`` (the default) picks the fastest available for the tensors' device: CUDA -> triton,
CPU -> cpp, otherwise reference, silently. Naming a backend explicitly (``set_backend``, the
``backend`` context manager or ``PYVIDGEN_BACKEND``) makes an unavailable one an error that says why.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
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


@functools.cache
def _default() -> str:
    # Read once, when first needed: the choice is looked up on every op call.
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


def _import_extension() -> ModuleType:
    """``pyvidgen._C``, or the build named by ``PYVIDGEN_EXTENSION`` (the sanitizer build of `make sanitize`)."""
    path = os.environ.get("PYVIDGEN_EXTENSION")
    if not path:
        return importlib.import_module("pyvidgen._C")
    spec = importlib.util.spec_from_file_location("pyvidgen._C", path)
    if spec is None or not os.path.isfile(path):
        raise ImportError(f"PYVIDGEN_EXTENSION={path!r} is not an extension module file")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pyvidgen._C"] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def _load_cpp() -> tuple[ModuleType | None, str]:
    try:
        module = _import_extension()
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


_REGISTERED: dict[str, bool] = {}


def cpp_kernel_registered(entry: str) -> bool:
    """Whether the loaded ``_C`` registers a CPU kernel for ``pyvidgen_cpp::<entry>`` (older builds may not).

    Asked on every call of an op, so the answer is kept: registrations do not change once ``_C`` is loaded.
    """
    known = _REGISTERED.get(entry)
    if known is None:
        known = _REGISTERED[entry] = torch._C._dispatch_has_kernel_for_dispatch_key(f"pyvidgen_cpp::{entry}", "CPU")
    return known


def _cpp_reason(device: torch.device, entry: str | None) -> str:
    why = unavailable_reason("cpp", device)
    if not why and entry is not None and not cpp_kernel_registered(entry):
        why = f"this build of _C has no kernel for {entry}; rebuild it (`make build`)"
    return why


def resolve(
    op: str,
    device: torch.device,
    *,
    backends: tuple[str, ...] = BACKENDS[1:],
    atomics_ok: bool = True,
    cpp_entry: str | None = None,
) -> str:
    """The concrete backend ``op`` runs on for tensors on ``device``.

    Args:
        op: the op's name, for error messages.
        device: the device of the op's tensors.
        backends: the implementations the op has.
        atomics_ok: False when the kernel about to run scatters with atomics (non-deterministic) and
            ``torch.are_deterministic_algorithms_enabled()``: ``auto`` then avoids triton, and an explicit
            "triton" raises.
        cpp_entry: the ``pyvidgen_cpp`` op the cpp backend would call; a build without its kernel (older
            sources) counts as cpp being unavailable for this op.

    Raises:
        RuntimeError: an explicitly chosen backend cannot run these tensors; the message says why.
    """
    name = get_backend()
    if name == "auto":
        kind = device.type
        if kind == "cuda" and atomics_ok and "triton" in backends and not unavailable_reason("triton", device):
            return "triton"
        # _load_cpp() first: loading the extension is what registers its kernels.
        cpp_ok = "cpp" in backends and not _load_cpp()[1] and (cpp_entry is None or cpp_kernel_registered(cpp_entry))
        if kind == "cpu" and cpp_ok:
            return "cpp"
        return "reference"
    if name not in backends:
        why = f"{op} has no {name} implementation (it has {', '.join(backends)})"
    else:
        why = _cpp_reason(device, cpp_entry) if name == "cpp" else unavailable_reason(name, device)
    if not why and name == "triton" and not atomics_ok:
        why = (
            "its kernel accumulates with atomic adds, which is not deterministic, and "
            "torch.are_deterministic_algorithms_enabled() is True; use backend 'reference' or 'auto'"
        )
    if why:
        raise RuntimeError(f"{op}: backend {name!r} is unavailable: {why}")
    return name
