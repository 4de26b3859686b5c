"""pytest-benchmark suite of ``flow_warp``: every provider x mode x shape of the registry (see conftest.py)."""

OP = "flow_warp"


def test_flow_warp(bench_case, provider, mode, shape):
    bench_case(OP, provider, mode, shape)
