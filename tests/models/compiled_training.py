"""Inductor against eager for whole models: the loss and every parameter gradient of a training step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch._inductor.config


def inductor_settings(dynamic: bool) -> contextlib.AbstractContextManager:
    """The Inductor configuration a user needs for this torch on CPU.

    With dynamic shapes, CPU Inductor always plans convolutions channels_last and then fails to order the
    symbolic strides of a view of a pointwise result that feeds a convolution ("cannot determine truth value
    of Relational", pytorch/pytorch#185510; plain nn.Conv2d after a flatten(0, 1) of frames reproduces it).
    Turning the layout optimisation off is the workaround the README documents; static shapes need nothing.
    """
    if dynamic:
        return torch._inductor.config.patch(layout_optimization=False)
    return contextlib.nullcontext()


def assert_compiled_training_matches_eager(
    model: torch.nn.Module,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    *,
    dynamic: bool,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> None:
    """Compile ``loss_of`` once with Inductor and check each batch's loss and gradients against eager."""
    torch._dynamo.reset()
    with inductor_settings(dynamic):
        compiled = torch.compile(loss_of, dynamic=dynamic)
        for frames in batches:
            results = {}
            for name, fn in (("eager", loss_of), ("compiled", compiled)):
                model.zero_grad()
                loss = fn(frames)
                loss.backward()
                results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
            torch.testing.assert_close(results["compiled"][0], results["eager"][0], rtol=1e-5, atol=atol)
            for compiled_grad, eager_grad in zip(results["compiled"][1], results["eager"][1], strict=True):
                torch.testing.assert_close(compiled_grad, eager_grad, rtol=rtol, atol=atol)
