"""Apply steering: a different mix of vector sets to each row of one batched forward.

A row's *strengths* map dimension names to percent of each vector set's functional range
(-100..+100). For every selected layer, the row's mix folds into one delta
``sum_i alpha_i * w_i`` (:mod:`.batching`); a hook adds it to that row at every position and
rescales each token back to its original norm. Rows without steering pass through untouched,
bit for bit.

Hooks are installed once per loaded model (:class:`SteeringHooks`) and read the plan of the
forward running now; nothing is registered or removed per forward.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

from .adapters import ArchitectureAdapter
from .batching import BatchSteering, LayerDelta, PreparedVectorSet, SteeringPlan, Strengths, fold_strengths
from .config import MAX_PERCENT
from .errors import SteeringError
from .models import LoadedModel
from .sites import attach
from .vectorset import VectorSet


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


def prepare_vector_sets(lm: LoadedModel, vector_sets: Sequence[VectorSet]) -> dict[str, PreparedVectorSet]:
    """Each vector set checked against ``lm`` and prepared on its device and dtype, by name."""
    return {
        name: PreparedVectorSet.prepare(vector_set, 0, lm.device, lm.dtype)
        for name, vector_set in index_vector_sets(vector_sets, lm).items()
    }


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
    prepared = prepare_vector_sets(lm, vector_sets)
    batch = BatchSteering(lm.num_layers, lm.hidden_size, lm.device, lm.dtype)
    batch.append([fold_strengths(prepared, strengths, max_percent) for strengths in rows])
    return batch.plan


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


class SteeringHooks:
    """The steering hooks of one model: installed once per (site, layer) on first use, then
    kept; each reads the plan of the forward running now and does nothing without one.

    One plan at a time: :meth:`planned` holds a lock, so two threads steering the same model
    take turns instead of mixing their plans. On one thread a block may nest in another (a
    ``generate`` inside ``steer``): the inner plan applies inside it, the outer one after.
    """

    def __init__(self, adapter: ArchitectureAdapter) -> None:
        self.adapter = adapter
        self.plan: SteeringPlan = {}
        self._handles: dict[tuple[str, int], RemovableHandle] = {}
        self._lock = threading.RLock()

    @contextmanager
    def planned(self, plan: SteeringPlan) -> Iterator[None]:
        """Steer every forward inside the block by ``plan``."""
        with self._lock:
            for site, layers in plan.items():
                for layer in layers:
                    self._install(site, layer)
            outer, self.plan = self.plan, plan
            try:
                yield
            finally:
                self.plan = outer

    def _install(self, site: str, layer: int) -> None:
        if (site, layer) not in self._handles:
            self._handles[(site, layer)] = attach(
                self.adapter, site, layer, lambda activation: self._steer(site, layer, activation)
            )

    def _steer(self, site: str, layer: int, activation: torch.Tensor) -> torch.Tensor | None:
        layer_delta = self.plan.get(site, {}).get(layer)
        return None if layer_delta is None else add_and_rescale(activation, layer_delta)

    def remove(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()


def hooks_for(lm: LoadedModel) -> SteeringHooks:
    """``lm``'s steering hooks, installed on first use (again if its modules were replaced, as
    tensor parallelism does when it shards the model)."""
    hooks = lm.steering_hooks
    if not isinstance(hooks, SteeringHooks) or hooks.adapter is not lm.adapter:
        if isinstance(hooks, SteeringHooks):
            hooks.remove()
        hooks = lm.steering_hooks = SteeringHooks(lm.adapter)
    return hooks


@contextmanager
def apply_plan(lm: LoadedModel, plan: SteeringPlan) -> Iterator[None]:
    """Steer every forward of ``lm`` inside the block by ``plan``."""
    with hooks_for(lm).planned(plan):
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
