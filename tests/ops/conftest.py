"""Parametrisation of the shared op tester: ``variant`` takes every variant of the test class's op."""

from __future__ import annotations

import pytest

from pyvidgen.ops import OPS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames or metafunc.cls is None or not hasattr(metafunc.cls, "op_name"):
        return
    variants = OPS[metafunc.cls.op_name].spec.samples.variants
    metafunc.parametrize("variant", variants, ids=[v.name for v in variants])
