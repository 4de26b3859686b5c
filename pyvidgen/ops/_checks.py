"""Small checks shared by the ops and the modules (tensor checks live in :mod:`pyvidgen.ops._layout`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_choice(op: str, name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def deterministic() -> bool:
    """Whether the caller asked for deterministic algorithms."""
    return torch.are_deterministic_algorithms_enabled()
