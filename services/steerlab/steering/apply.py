"""Apply steering: a different mix of vector sets to each row of one batched forward.

A row's *strengths* map dimension names to percent of each vector set's functional range
(-100..+100). For every selected layer, the row's mix folds into one delta
``sum_i alpha_i * w_i``; the hook adds it to that row at every position and rescales each
token back to its original norm. Rows without steering pass through untouched, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from .errors import SteeringError
from .models import LoadedModel
from .sites import Transform, hooked
from .vectorset import VectorSet

Strengths = Mapping[str, float]
MAX_PERCENT = 100.0


@dataclass(frozen=True)
class LayerDelta:
    """What to add at one layer: ``delta`` [rows, hidden]; ``steered`` [rows] says which rows.

    A row that is not steered carries a zero delta. ``rows`` may be 1 to apply the same delta to
    every row of a batch.
    """

    delta: torch.Tensor
    steered: torch.Tensor


# site -> layer -> delta
SteeringPlan = dict[str, dict[int, LayerDelta]]


def check_strength(name: str, percent: float, max_percent: float = MAX_PERCENT) -> float:
    """Validate one strength; out-of-range or non-finite values are refused, never clamped."""
    if not isinstance(percent, (int, float)) or not math.isfinite(percent):
        raise SteeringError(f"strength for {name!r} must be a finite number, got {percent!r}")
    if abs(percent) > max_percent:
        raise SteeringError(
            f"strength for {name!r} is {percent:g}%, outside -{max_percent:g}..{max_percent:g}"
        )
    return float(percent)


def index_vector_sets(
    vector_sets: Sequence[VectorSet], lm: LoadedModel | None = None
) -> dict[str, VectorSet]:
    """Map dimension name -> vector set, checking each against ``lm`` when given."""
    by_name: dict[str, VectorSet] = {}
    for vector_set in vector_sets:
        if vector_set.name in by_name:
            raise SteeringError(f"two vector sets for dimension {vector_set.name!r}")
        if lm is not None:
            vector_set.check_model(lm.fingerprint)
        by_name[vector_set.name] = vector_set
    return by_name


def _row_deltas(
    by_name: Mapping[str, VectorSet], strengths: Strengths, max_percent: float
) -> dict[tuple[str, int], torch.Tensor]:
    deltas: dict[tuple[str, int], torch.Tensor] = {}
    for name, percent in strengths.items():
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none loaded"
            raise SteeringError(f"unknown dimension {name!r}; available: {known}")
        alpha = by_name[name].alpha(check_strength(name, percent, max_percent))
        if alpha == 0.0:
            continue
        vector_set = by_name[name]
        for layer in vector_set.selected_layers:
            key = (vector_set.site, layer)
            contribution = alpha * vector_set.directions[layer]
            deltas[key] = deltas[key] + contribution if key in deltas else contribution
    return deltas


def plan_rows(
    vector_sets: Sequence[VectorSet],
    rows: Sequence[Strengths | None],
    *,
    lm: LoadedModel,
    max_percent: float = MAX_PERCENT,
) -> SteeringPlan:
    """Fold each row's strengths into one delta per (site, layer) for a batch of ``len(rows)``.

    ``max_percent`` above 100 lets research sweeps go past the functional range.
    """
    by_name = index_vector_sets(vector_sets, lm)
    per_row = [_row_deltas(by_name, strengths or {}, max_percent) for strengths in rows]
    keys = sorted({key for deltas in per_row for key in deltas})
    dtype = next(lm.model.parameters()).dtype
    plan: SteeringPlan = {}
    for site, layer in keys:
        delta = torch.zeros(len(rows), lm.hidden_size)
        steered = torch.zeros(len(rows), dtype=torch.bool)
        for row, deltas in enumerate(per_row):
            if (site, layer) in deltas:
                delta[row] = deltas[(site, layer)]
                steered[row] = True
        plan.setdefault(site, {})[layer] = LayerDelta(delta.to(lm.device, dtype), steered.to(lm.device))
    return plan


def add_and_rescale(activation: torch.Tensor, layer_delta: LayerDelta) -> torch.Tensor:
    """``x + delta`` rescaled to ``|x|`` per token, on steered rows only. x: [batch, seq, hidden]."""
    delta = layer_delta.delta
    if delta.shape[0] not in (1, activation.shape[0]):
        raise SteeringError(
            f"steering was planned for {delta.shape[0]} rows but the forward has "
            f"{activation.shape[0]}; plan one strength mix per row"
        )
    # An unsteered row's delta is zero, so its scale is exactly 1 and it comes out bit for bit
    # unchanged without a separate select (one op fewer per hooked layer on the hot path).
    shifted = activation + delta[:, None, :]
    scale: torch.Tensor = torch.linalg.vector_norm(activation, dim=-1, keepdim=True, dtype=torch.float32)
    scale /= torch.linalg.vector_norm(shifted, dim=-1, keepdim=True, dtype=torch.float32).clamp_min_(1e-12)
    if activation.dtype == torch.float32:
        return shifted.mul_(scale)
    return (shifted.float() * scale).to(activation.dtype)


def _transform(layer_delta: LayerDelta) -> Transform:
    return lambda activation: add_and_rescale(activation, layer_delta)


@contextmanager
def apply_plan(lm: LoadedModel, plan: SteeringPlan) -> Iterator[None]:
    """Hook ``plan`` into the model for the duration of the block; always unhooks."""
    with ExitStack() as stack:
        for site, layers in plan.items():
            transforms = {layer: _transform(layer_delta) for layer, layer_delta in layers.items()}
            stack.enter_context(hooked(lm.adapter, site, transforms))
        yield


@contextmanager
def steer(
    lm: LoadedModel,
    vector_sets: Sequence[VectorSet],
    rows: Sequence[Strengths | None],
    *,
    max_percent: float = MAX_PERCENT,
) -> Iterator[None]:
    """Steer every forward (and ``generate``) inside the block, row ``i`` by ``rows[i]``.

    >>> with steer(lm, [cost, age], [{"cost": 80}, None, {"cost": -40, "age": 100}]):
    ...     lm.model.generate(**batch_of_three)
    """
    with apply_plan(lm, plan_rows(vector_sets, rows, lm=lm, max_percent=max_percent)):
        yield
