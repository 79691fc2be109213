"""Per-row steering of a batch, as dense tensors that join and leave with rows: the one
steering path of SteerLab, used by :func:`~steerlab.steering.steer` and by the engine alike.

A vector set is prepared once into a *ready-to-add* tensor: its unit direction per selected
layer (zeros elsewhere) on the model's device and dtype. A row's mix folds into one delta
per layer, ``sum_i alpha_i * w_i``; the batch keeps every row's delta stacked as
``[rows, layers, hidden]`` per activation site, so joining is one ``cat`` and leaving one
index, and its :data:`SteeringPlan` is what a forward's hooks read. No per-request state lives
in the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .config import MAX_PERCENT, check_strength
from .errors import SteeringError
from .vectorset import VectorSet

Strengths = Mapping[str, float]


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


@dataclass(frozen=True, eq=False)
class PreparedVectorSet:
    """One registered version of a vector set, ready to fold into deltas."""

    vector_set: VectorSet
    version: int
    directions: torch.Tensor  # [layers, hidden], zero on layers that are not selected
    selected: torch.Tensor  # [layers] bool

    @classmethod
    def prepare(
        cls, vector_set: VectorSet, version: int, device: torch.device, dtype: torch.dtype
    ) -> PreparedVectorSet:
        layers = list(vector_set.selected_layers)
        selected = torch.zeros(vector_set.directions.shape[0], dtype=torch.bool)
        selected[layers] = True
        directions = torch.where(selected[:, None], vector_set.directions.float(), 0.0)
        return cls(vector_set, version, directions.to(device, dtype), selected.to(device))

    @property
    def name(self) -> str:
        return self.vector_set.name


@dataclass(frozen=True)
class AppliedStrength:
    """What was applied for one dimension: which version, at what strength."""

    dimension: str
    version: int
    percent: float
    alpha: float


@dataclass(frozen=True, eq=False)
class RowSteering:
    """One request's folded mix: per site, a delta [layers, hidden] and where it applies [layers]."""

    deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]
    applied: tuple[AppliedStrength, ...]

    @classmethod
    def none(cls) -> RowSteering:
        return cls({}, ())


def fold_mix(mix: Sequence[tuple[PreparedVectorSet, float]], max_percent: float = MAX_PERCENT) -> RowSteering:
    """Fold ``(vector set, percent)`` pairs into one delta per layer and site.

    ``max_percent`` above 100 lets research sweeps go past the functional range."""
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    applied = []
    for prepared, percent in mix:
        alpha = prepared.vector_set.alpha(check_strength(prepared.name, percent, max_percent))
        applied.append(AppliedStrength(prepared.name, prepared.version, percent, alpha))
        if alpha == 0.0:
            continue
        site = prepared.vector_set.site
        contribution = alpha * prepared.directions
        if site in deltas:
            delta, steered = deltas[site]
            deltas[site] = (delta + contribution, steered | prepared.selected)
        else:
            deltas[site] = (contribution, prepared.selected)
    return RowSteering(deltas, tuple(applied))


def fold_strengths(
    prepared: Mapping[str, PreparedVectorSet], strengths: Strengths | None, max_percent: float = MAX_PERCENT
) -> RowSteering:
    """One row's strengths by dimension name, folded (an unknown name is refused)."""
    mix = []
    for name, percent in (strengths or {}).items():
        if name not in prepared:
            known = ", ".join(sorted(prepared)) or "none loaded"
            raise SteeringError(f"unknown dimension {name!r}; available: {known}")
        mix.append((prepared[name], percent))
    return fold_mix(mix, max_percent)


class BatchSteering:
    """Every row's steering, stacked per site: delta [rows, layers, hidden], steered [rows, layers]."""

    def __init__(self, num_layers: int, hidden_size: int, device: torch.device, dtype: torch.dtype) -> None:
        self.shape = (num_layers, hidden_size)
        self.device, self.dtype = device, dtype
        self.rows = 0
        self.sites: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.plan: SteeringPlan = {}

    def like(self) -> BatchSteering:
        """An empty batch for the same model."""
        return BatchSteering(*self.shape, self.device, self.dtype)

    def append(self, rows: Sequence[RowSteering]) -> None:
        """Add rows after the existing ones."""
        added = self.like()
        added.rows = len(rows)
        for site in {site for row in rows for site in row.deltas}:
            delta, steered = added._zeros(len(rows))
            for i, row in enumerate(rows):
                if site in row.deltas:
                    delta[i], steered[i] = row.deltas[site]
            added.sites[site] = (delta, steered)
        self.extend(added)

    def extend(self, other: BatchSteering) -> None:
        """Add ``other``'s rows after this batch's rows."""
        for site in set(self.sites) | set(other.sites):
            delta, steered = self.sites.get(site) or self._zeros(self.rows)
            other_delta, other_steered = other.sites.get(site) or other._zeros(other.rows)
            self.sites[site] = (torch.cat([delta, other_delta]), torch.cat([steered, other_steered]))
        self.rows += other.rows
        self._replan()

    def retain(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices, in order)."""
        self.sites = {site: (delta[rows], steered[rows]) for site, (delta, steered) in self.sites.items()}
        self.rows = int(rows.numel())
        self._replan()

    def _zeros(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        delta = torch.zeros((rows, *self.shape), device=self.device, dtype=self.dtype)
        steered = torch.zeros((rows, self.shape[0]), device=self.device, dtype=torch.bool)
        return delta, steered

    def _replan(self) -> None:
        """Hooks go only where some row is steered; an unsteered batch runs with none."""
        self.sites = {site: tensors for site, tensors in self.sites.items() if bool(tensors[1].any())}
        self.plan = {}
        for site, (delta, steered) in self.sites.items():
            active = steered.any(dim=0).nonzero().flatten().tolist()
            self.plan[site] = {layer: LayerDelta(delta[:, layer], steered[:, layer]) for layer in active}
