"""``pyvidgen check``: every available kernel backend against the reference on fresh random inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch

import pyvidgen
from pyvidgen.ops import PADDING_MODES, conv_lstm_gates, flow_smoothness, flow_warp, multiplicative_unit

CaseFn = Callable[..., torch.Tensor]


def _gate_inputs(gen: torch.Generator, device: str) -> list[torch.Tensor]:
    """Pre-activations (3, 4*5, 9, 7), a state (3, 5, 9, 7) and peephole weights (3, 5, 1, 1)."""
    pre = torch.randn(3, 20, 9, 7, generator=gen) * 2
    return [
        pre.to(device),
        torch.randn(3, 5, 9, 7, generator=gen).to(device),
        torch.randn(3, 5, 1, 1, generator=gen).to(device),
    ]


def _warp_case(mode: str, normalized: bool) -> CaseFn:
    scale = 0.3 if normalized else 1.0  # normalised flows are in [-1, 1] units
    return lambda x, flow: flow_warp(x, flow * scale, padding_mode=mode, normalized=normalized)


def _warp_inputs(gen: torch.Generator, device: str) -> list[torch.Tensor]:
    x = torch.randn(3, 7, 13, 11, generator=gen)
    flow = torch.randn(3, 2, 13, 11, generator=gen) * 3
    return [x.to(device), flow.to(device)]


def _smoothness_inputs(gen: torch.Generator, device: str) -> list[torch.Tensor]:
    return [(torch.randn(3, 2, 17, 19, generator=gen) * 2).to(device)]


CASES: dict[str, tuple[Callable[[torch.Generator, str], list[torch.Tensor]], dict[str, CaseFn]]] = {
    "flow_warp": (
        _warp_inputs,
        {
            f"{mode}{'/normalized' if norm else ''}": (
                lambda x, f, mode=mode, norm=norm: flow_warp(
                    x, f * (0.3 if norm else 1), padding_mode=mode, normalized=norm
                )
            )
            for mode in PADDING_MODES
            for norm in (False, True)
        },
    ),
    "flow_smoothness": (_smoothness_inputs, {"delta=1": lambda f: flow_smoothness(f, delta=1.0)}),
    "conv_lstm_gates": (
        _gate_inputs,
        {
            # h + c_next: one output whose gradient reaches both of the op's outputs.
            "no peephole": lambda g, c, p: sum(conv_lstm_gates(g, c)),
            "peephole (3,C,1,1)": lambda g, c, p: sum(conv_lstm_gates(g, c, p)),
        },
    ),
    "multiplicative_unit": (_gate_inputs, {"MU": lambda pre, h, p: multiplicative_unit(pre, h)}),
}


def _forward_and_grads(backend: str, fn: CaseFn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    with pyvidgen.backend(backend):
        out = fn(*leaves)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
    # An input a case does not use (the peephole weights without peepholes) has no gradient.
    return [out.detach(), *(g for g in grads if g is not None)]


def run_check(seed: int | None = None, device: str = "cpu") -> tuple[list[dict], bool]:
    """Compare each available kernel backend with the reference for every op and case.

    Returns:
        (rows, ok): one row per (op, case, backend) with the largest absolute error of the output
        and of each gradient, and whether all were within float32 tolerance.
    """
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() & 0x7FFFFFFF)
    backends = [b for b, why in pyvidgen.available_backends(device).items() if not why and b != "reference"]
    rows, ok = [], True
    for op, (make_inputs, cases) in CASES.items():
        inputs = make_inputs(gen, device)
        for case, fn in cases.items():
            expected = _forward_and_grads("reference", fn, inputs)
            for backend in backends:
                actual = _forward_and_grads(backend, fn, inputs)
                pairs = list(zip(actual, expected, strict=True))
                errors = [float((a - e).abs().max()) if a.numel() else 0.0 for a, e in pairs]
                passed = all(torch.allclose(a, e, atol=1e-4, rtol=1e-4) for a, e in pairs)
                ok &= passed
                rows.append({"op": op, "case": case, "backend": backend, "max_abs_error": errors, "ok": passed})
    return rows, ok


def format_check(rows: list[dict]) -> str:
    lines = [f"{'op':20s} {'case':22s} {'backend':8s} {'max |error| (out, grads...)':36s} result"]
    for r in rows:
        errors = ", ".join(f"{e:.1e}" for e in r["max_abs_error"])
        lines.append(f"{r['op']:20s} {r['case']:22s} {r['backend']:8s} {errors:36s} {'ok' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main_check(seed: int | None, device: str) -> int:
    rows, ok = run_check(seed, device)
    if not rows:
        print("no kernel backend available besides the reference; nothing to check")
        return 0
    print(format_check(rows))
    print("all backends agree with the reference" if ok else "MISMATCH against the reference")
    return 0 if ok else 1
