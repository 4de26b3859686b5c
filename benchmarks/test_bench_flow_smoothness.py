"""pytest-benchmark suite of ``flow_smoothness``: every provider x mode x shape of the registry (see conftest.py)."""

OP = "flow_smoothness"


def test_flow_smoothness(bench_case, provider, mode, shape):
    bench_case(OP, provider, mode, shape)
