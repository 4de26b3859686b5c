"""Training steps of every model on the fused ops against the same model written the usual way, eager and compiled.

:func:`time_models` takes each model's training problem from :data:`pyvidgen.bench.model_step.PROBLEMS` and times
one training step (forward, loss, backward, RMSprop) of four providers, each training its own copy from the same
weights:

* ``fused``: eager, the pyvidgen ops on backend "auto" (on CPU the C++ kernels);
* ``fused_compiled``: ``torch.compile`` of the loss computation on backend "auto"; the ops stay custom ops in the
  graph, and AOTAutograd compiles the backward;
* ``usual``: eager, the model as popular PyTorch code writes it (:func:`~pyvidgen.bench.usual.usual_model` run under
  :func:`~pyvidgen.bench.usual.usual_ops`): ``F.grid_sample``, a dense convolution of the masked weight, materialised
  filterbanks, a grouped convolution, eager gate math, a ConvLSTM of one ``conv(cat[x_t, h])`` per step;
* ``usual_compiled``: ``torch.compile`` of the usual loss computation (Inductor sees only aten ops).

Before timing, one step's loss and gradients of every provider are compared with the usual eager model's; then the
providers are timed interleaved (:func:`pyvidgen.bench.layers._interleaved`), so a shared machine's slow phases hit
all of them alike. A provider that fails (e.g. a compile error) gets a row with ``ms`` None and the error in
``notes``. Nothing is printed except through ``progress``.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pyvidgen._backend import backend
from pyvidgen.bench.layers import _interleaved
from pyvidgen.bench.model_step import CONVOLUTION_OPS, PROBLEMS, _profile_shares
from pyvidgen.bench.usual import EVENT_PREFIX, fused_names, usual_model, usual_ops

MODELS = ("st-ae", "vpn", "draw", "cross-conv")
#: provider -> description.
PROVIDERS: dict[str, str] = {
    "fused": "eager, pyvidgen ops (backend auto)",
    "fused_compiled": "torch.compile of the loss, pyvidgen ops as custom ops in the graph (backend auto)",
    "usual": "eager, plain PyTorch (usual_model + usual_ops)",
    "usual_compiled": "torch.compile of the usual loss",
}
# Events under a usual:: event left out of its hot spot: the naive ConvLSTM cell's convolution of cat[x_t, h] (and
# the concatenation), which the fused ConvLSTM runs outside its op as well.
_LEFT_OUT = {EVENT_PREFIX + "conv_lstm_cell": ("aten::conv2d", "aten::cat")}
_BACKWARD_NODE = "autograd::engine::evaluate_function: "


def _outermost(event: Any, names: tuple[str, ...]) -> Iterable[Any]:
    """The descendants of ``event`` named in ``names`` that no other such descendant contains."""
    for child in event.cpu_children:
        if child.name in names:
            yield child
        else:
            yield from _outermost(child, names)


def _forward_ops(event: Any, names: tuple[str, ...]) -> Iterable[Any]:
    """``event``'s descendants, without those inside an event named in ``names``."""
    for child in event.cpu_children:
        if child.name not in names:
            yield child
            yield from _forward_ops(child, names)


def usual_shares(step: Callable[[], None]) -> dict[str, float]:
    """Fractions of one step's CPU time in the usual versions of the fused ops and in convolutions.

    Hot spot: the inclusive time of every ``usual::*`` event (the usual functions of :data:`USUAL_OPS
    <pyvidgen.bench.usual.USUAL_OPS>` in the forward, the usual smoothness gradient in the backward, each naive
    ConvLSTM cell without its ``conv2d`` and ``cat``) plus the inclusive time of every backward autograd node
    (``autograd::engine::evaluate_function: <Node>``) created by an aten op run inside those forward events, matched
    by the autograd sequence number and thread the profiler records for both. That is the usual counterpart of
    :func:`~pyvidgen.bench.model_step._profile_shares`' fused-op share (a ``pyvidgen::`` op and its backward node).
    Convolution: the self time of :data:`~pyvidgen.bench.model_step.CONVOLUTION_OPS`. Both are fractions of the sum
    of every event's self time; they overlap where the hot spot is itself a convolution (masked_conv2d,
    cross_conv2d), as the fused shares do.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = list(prof.events())
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.name in CONVOLUTION_OPS)
    hot, linked = 0.0, set()

    def visit(event: Any) -> None:
        nonlocal hot
        if event.name.startswith(EVENT_PREFIX):
            left_out = _LEFT_OUT.get(event.name, ())
            hot += event.cpu_time_total - sum(e.cpu_time_total for e in _outermost(event, left_out))
            linked.update((e.sequence_nr, e.thread) for e in _forward_ops(event, left_out) if e.sequence_nr >= 0)
            return
        for child in event.cpu_children:
            visit(child)

    for event in events:
        if event.cpu_parent is None:
            visit(event)
    for event in events:
        if event.name.startswith(_BACKWARD_NODE) and (event.sequence_nr, event.fwd_thread) in linked:
            hot += event.cpu_time_total
    return {"hot_spot_share": hot / max(total, 1e-9), "convolution_share": conv / max(total, 1e-9)}


def _named_gradients(model: torch.nn.Module, loss: Tensor) -> dict[str, Tensor]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    # A parameter the loss does not reach has a zero gradient (allow_unused gives None).
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(named, grads, strict=True)}


def _disagreeing(grads: Mapping[str, Tensor], expected: Mapping[str, Tensor], rtol: float = 1e-2) -> str:
    """ "" when every gradient is within ``rtol`` of its parameter's largest expected gradient, else the worst.

    Float32 rounding (amplified by the BatchNorms at small batches) stays well below 1%; a wrong gradient does not.
    """
    worst, name = 0.0, ""
    for k, g in grads.items():
        scale = float(expected[k].abs().max())
        relative = float((g - expected[k]).abs().max()) / max(scale, 1e-12)
        if relative > worst:
            worst, name = relative, k
    return f"{name}: {worst:.0%} of its largest gradient" if worst > rtol else ""


def _error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def _graphs() -> int:
    """Graphs Dynamo has compiled so far in this process (more than one per compile: graph breaks)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def time_model(
    name: str,
    *,
    seconds: float = 6.0,
    min_runs: int = 4,
    rounds: int = 3,
    compile: bool = True,  # noqa: A002 - the CLI's --no-compile
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **sizes: Any,
) -> list[dict[str, Any]]:
    """One training step of model ``name`` on each provider (see the module docstring).

    Args:
        name: a key of :data:`~pyvidgen.bench.model_step.PROBLEMS` ("st-ae", "vpn", "draw", "cross-conv").
        seconds: time budget per provider, split over ``rounds`` interleaved turns.
        min_runs: at least this many timed steps per provider.
        rounds: interleaved turns.
        compile: also the two compiled providers.
        device: where the models run.
        seed: seed of the weights and the batch.
        progress: called with a line of text before each slow phase (compiling, timing).
        sizes: keyword arguments of the model's problem builder (preset, batch, seq_len, size, config overrides),
            e.g. ``batch=2, seq_len=3, size=16`` for st-ae; the batch is (batch, seq_len, C, size, size) frames.

    Returns:
        One dict per provider: ``model, preset, batch, seq_len, size, device, provider, description, ms`` (median
        of the timed steps, None if the provider failed), ``ms_q1, ms_q3, runs``, ``fused_speedup`` (this
        provider's median / the fused median: how many times faster the eager fused step is), ``compile_s`` (wall
        time of the compiled providers' first call of the loss and its backward: Dynamo, AOTAutograd and Inductor,
        forward and backward graphs; Inductor's on-disk caches from earlier runs of the same graphs shorten it to
        about a second), ``loss``, ``loss_diff_vs_usual`` and ``max_grad_diff_vs_usual`` (of the first step, against
        the usual eager model, gradients compared parameter by parameter in the fused model's layout),
        ``hot_spot_share`` and ``convolution_share`` (eager providers on CPU, else None: the fused one from
        :func:`~pyvidgen.bench.model_step._profile_shares`, the usual one from :func:`usual_shares`), ``notes``
        (module swaps, failures, graph breaks, and "GRADIENTS DIFFER" where a parameter's gradient is off by more
        than 1% of its largest expected value).
    """
    device = torch.device(device)
    say = progress or (lambda _line: None)
    spec = PROBLEMS[name](seed=seed, device=device, **sizes)
    providers = [p for p in PROVIDERS if compile or not p.endswith("_compiled")]
    models, notes = {}, {p: [] for p in providers}
    for p in providers:
        if p.startswith("usual"):
            models[p], note = usual_model(spec.base)
            if note:
                notes[p].append(note)
        else:
            models[p] = copy.deepcopy(spec.base)
    contexts: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
        p: (usual_ops if p.startswith("usual") else (lambda: backend("auto"))) for p in providers
    }
    # dynamic=False: every step has the same shapes; a shape change (another test's sizes) recompiles statically.
    losses = {
        p: torch.compile(spec.loss_fn, dynamic=False) if p.endswith("_compiled") else spec.loss_fn for p in providers
    }

    # The first step from the same weights: loss and gradients of each provider (the compiled ones compile here).
    checks: dict[str, tuple[float, dict[str, Tensor]]] = {}
    compile_s: dict[str, float | None] = dict.fromkeys(providers)
    for p in providers:
        if p.endswith("_compiled"):
            say(f"{name}: compiling {p}")
        # Only a compile needs Dynamo's counters (importing torch._dynamo takes seconds).
        graphs, start = _graphs() if p.endswith("_compiled") else 0, time.perf_counter()
        try:
            with contexts[p]():
                loss = losses[p](models[p])
                grads = _named_gradients(models[p], loss)
        except Exception as exc:  # noqa: BLE001 - a provider's failure is a row's note, not the run's end
            notes[p].append(f"failed: {_error(exc)}")
            continue
        if p.endswith("_compiled"):
            compile_s[p] = time.perf_counter() - start
            if _graphs() - graphs > 1:
                notes[p].append(f"{_graphs() - graphs} graphs (graph breaks)")
        checks[p] = (loss.item(), fused_names(models[p], grads) if p.startswith("usual") else grads)

    optimizers = {p: torch.optim.RMSprop(models[p].parameters(), lr=spec.lr) for p in checks}

    def step_fn(p: str) -> Callable[[], None]:
        model, loss_fn, optimizer = models[p], losses[p], optimizers[p]

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model).backward()
            optimizer.step()

        return step

    steps = {p: step_fn(p) for p in checks}
    for p, step in list(steps.items()):
        try:
            with contexts[p]():
                step()  # warm-up
        except Exception as exc:  # noqa: BLE001
            notes[p].append(f"failed: {_error(exc)}")
            del steps[p]
    say(f"{name}: timing {', '.join(steps)}")
    samples = _interleaved(steps, {p: contexts[p] for p in steps}, device, seconds, min_runs, rounds) if steps else {}
    medians = {p: statistics.median(s) for p, s in samples.items()}

    reference = checks.get("usual")
    rows = []
    for p in providers:
        s = samples.get(p)
        q1, _, q3 = (statistics.quantiles(s, n=4) if len(s) > 1 else (s[0],) * 3) if s else (None,) * 3
        shares = {"hot_spot_share": None, "convolution_share": None}
        if p in steps and device.type == "cpu" and p in ("fused", "usual"):
            with contexts[p]():
                if p == "fused":
                    measured = _profile_shares(steps[p])
                    shares = {
                        "hot_spot_share": measured["fused_op_share"],
                        "convolution_share": measured["convolution_share"],
                    }
                else:
                    shares = usual_shares(steps[p])
        loss_diff = grad_diff = None
        if p in checks and reference is not None:
            loss_diff = abs(checks[p][0] - reference[0])
            grads, expected = checks[p][1], reference[1]
            if set(grads) == set(expected):
                grad_diff = max((float((grads[k] - expected[k]).abs().max()) for k in grads), default=0.0)
                wrong = _disagreeing(grads, expected)
                if wrong:
                    notes[p].append(f"GRADIENTS DIFFER from the usual eager model's ({wrong})")
            else:
                notes[p].append(f"parameters differ from the usual model's: {sorted(set(grads) ^ set(expected))[:4]}")
        rows.append(
            {
                "model": spec.model,
                **spec.problem,
                "device": str(device),
                "provider": p,
                "description": PROVIDERS[p],
                "ms": medians.get(p),
                "ms_q1": q1,
                "ms_q3": q3,
                "runs": len(s) if s else 0,
                "fused_speedup": medians[p] / medians["fused"] if p in medians and "fused" in medians else None,
                "compile_s": compile_s[p],
                "loss": checks[p][0] if p in checks else None,
                "loss_diff_vs_usual": loss_diff,
                "max_grad_diff_vs_usual": grad_diff,
                **shares,
                "notes": "; ".join(notes[p]),
            }
        )
    return rows


def time_models(
    names: Sequence[str] = MODELS,
    *,
    seconds: float = 6.0,
    min_runs: int = 4,
    rounds: int = 3,
    compile: bool = True,  # noqa: A002 - the CLI's --no-compile
    device: torch.device | str = "cpu",
    seed: int = 0,
    sizes: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`time_model` of each model in ``names``; ``sizes[name]`` are its builder's keyword arguments.

    Raises:
        ValueError: an unknown model name.
    """
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        raise ValueError(f"time_models: unknown models {unknown}; expected some of {list(PROBLEMS)}")
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += time_model(
            name,
            seconds=seconds,
            min_runs=min_runs,
            rounds=rounds,
            compile=compile,
            device=device,
            seed=seed,
            progress=progress,
            **(sizes or {}).get(name, {}),
        )
    return rows
