"""The layer and model-step benchmarks: they run, compare equal work and format their tables."""

from __future__ import annotations

from pyvidgen.bench.layers import time_conv_lstm_layer
from pyvidgen.bench.layers_report import format_layer_table, format_step_table
from pyvidgen.bench.model_step import time_model_step


def test_model_step_benchmark_checks_both_backends_agree():
    rows = time_model_step("st-ae", batch=2, seq_len=3, size=16, seconds=0.2, min_runs=1, rounds=1)
    assert [r["backend"] for r in rows] == ["reference", "auto"]
    for r in rows:
        assert r["ms"] > 0 and 0 <= r["fused_op_share"] <= 1 and 0 <= r["convolution_share"] <= 1
        assert r["loss_diff_vs_reference"] < 1e-5 and r["max_grad_diff_vs_reference"] < 1e-4
    table = format_step_table(rows)
    assert "st-ae small 2x3x16^2" in table and "auto" in table


def test_layer_benchmark_table():
    rows = time_conv_lstm_layer(batch=2, steps=2, channels=4, size=8, seconds=0.1, min_runs=1, rounds=1, warmup=0)
    assert {r["provider"] for r in rows} == {"pyvidgen", "naive", "pyvidgen_reference"}
    assert all(r["max_abs_diff"] < 1e-5 for r in rows)
    assert "ConvLSTM 2x2x4x8^2 k3" in format_layer_table(rows)
