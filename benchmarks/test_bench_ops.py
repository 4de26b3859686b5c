"""pytest-benchmark suite of every registered op: op x provider x mode x shape of the registry (see conftest.py)."""


def test_op(bench_case, op, provider, mode, shape):
    bench_case(op, provider, mode, shape)
