"""Parametrisation of the shared op tester from the test class's op declaration.

``variant``: every variant of the op; ``backend``: the op's kernel backends that run here (cpp, Triton,
interpreted without a GPU); ``any_backend``: the reference as well.
"""

from __future__ import annotations

import pytest

from pyvidgen.ops import OPS
from tests.conftest import kernel_backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.cls is None or not hasattr(metafunc.cls, "op_name"):
        return
    spec = OPS[metafunc.cls.op_name].spec
    backends = [b for b in kernel_backends() if b in spec.backends]
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", spec.samples.variants, ids=[v.name for v in spec.samples.variants])
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends)
    if "any_backend" in metafunc.fixturenames:
        metafunc.parametrize("any_backend", ["reference", *backends])
