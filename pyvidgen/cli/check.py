"""``pyvidgen check``: every available kernel backend against the reference on fresh random inputs.

Every declared op, every variant, at the op's check size: forward and every gradient, within the
tolerance of :mod:`pyvidgen.tolerance`.
"""

from __future__ import annotations

import torch

import pyvidgen
from pyvidgen.ops import OPS
from pyvidgen.testing import check_backend


def run_check(seed: int | None = None, device: str = "cpu") -> tuple[list[dict], bool]:
    """Compare each available kernel backend with the reference for every op and variant.

    Returns:
        (rows, ok): one row per (op, variant, backend) with the largest absolute error of each output
        and gradient, and whether all were within float32 tolerance.
    """
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() & 0x7FFFFFFF)
    available = [b for b, why in pyvidgen.available_backends(device).items() if not why and b != "reference"]
    rows, ok = [], True
    for name, op in OPS.items():
        samples = op.spec.samples
        for variant in samples.variants:
            args = op.sample(samples.check_dims, device=device, generator=gen, variant=variant)
            for backend in (b for b in available if b in op.spec.backends):
                result = check_backend(op, backend, args, gen)
                ok &= result["ok"]
                errors = {part: r.get("max_abs_err", float("nan")) for part, r in result["parts"].items()}
                rows.append(
                    {"op": name, "case": variant.name, "backend": backend, "max_abs_error": errors, "ok": result["ok"]}
                )
    return rows, ok


def format_check(rows: list[dict]) -> str:
    lines = [f"{'op':20s} {'case':22s} {'backend':8s} {'max |error| (outputs, gradients)':44s} result"]
    for r in rows:
        errors = ", ".join(f"{e:.1e}" for e in r["max_abs_error"].values())
        lines.append(f"{r['op']:20s} {r['case']:22s} {r['backend']:8s} {errors:44s} {'ok' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main_check(seed: int | None, device: str) -> int:
    rows, ok = run_check(seed, device)
    if not rows:
        print("no kernel backend available besides the reference; nothing to check")
        return 0
    print(format_check(rows))
    print("all backends agree with the reference" if ok else "MISMATCH against the reference")
    return 0 if ok else 1
