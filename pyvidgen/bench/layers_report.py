"""Tables of the layer and model-step benchmarks (``pyvidgen bench --layers``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_layer_table(rows: Sequence[dict[str, Any]]) -> str:
    """ConvLSTM layer rows of :func:`pyvidgen.bench.layers.time_conv_lstm_layer`."""
    lines = [f"{'layer':34s} {'mode':8s} {'provider':19s} {'median ms':>10s} {'vs naive':>9s}  gates on"]
    for r in rows:
        problem = f"ConvLSTM {r['batch']}x{r['steps']}x{r['channels']}x{r['size']}^2 k{r['kernel']}"
        speedup = f"{r['speedup_vs_naive']:.2f}x" if r.get("speedup_vs_naive") else "-"
        lines.append(
            f"{problem:34s} {r['mode']:8s} {r['provider']:19s} {r['ms']:10.1f} {speedup:>9s}  {r['gates_backend']}"
        )
    return "\n".join(lines)


def format_step_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`pyvidgen.bench.model_step.time_training_step`."""
    lines = [
        f"{'training step':34s} {'backend':9s} {'median ms':>10s} {'vs ref':>7s} {'|dloss|':>8s} "
        f"{'fused ops':>9s} {'convs':>6s}"
    ]
    for r in rows:
        problem = f"{r['model']} {r['preset']} {r['batch']}x{r['seq_len']}x{r['size']}^2"
        fused = "-" if r["fused_op_share"] is None else f"{100 * r['fused_op_share']:.1f}%"
        convs = "-" if r["convolution_share"] is None else f"{100 * r['convolution_share']:.0f}%"
        lines.append(
            f"{problem:34s} {r['backend']:9s} {r['ms']:10.1f} {r['speedup_vs_reference']:6.2f}x "
            f"{r['loss_diff_vs_reference']:8.1e} {fused:>9s} {convs:>6s}"
        )
    return "\n".join(lines)


def format_sampling_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`pyvidgen.bench.sampling.time_vpn_sampling`."""
    lines = [f"{'sampling one frame':34s} {'sampler':9s} {'seconds':>10s} {'vs naive':>9s}  equal samples"]
    for r in rows:
        problem = f"vpn {r['preset']} {r['videos']}x{r['channels']}x{r['size']}^2"
        equal = "-" if r.get("equal") is None else ("yes" if r["equal"] else "NO")
        lines.append(f"{problem:34s} {r['sampler']:9s} {r['seconds']:10.2f} {r['speedup_vs_naive']:8.1f}x  {equal}")
    return "\n".join(lines)
