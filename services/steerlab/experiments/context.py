"""What every experiment shares: the model, the metrics, the scale, and where results go."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..evaluation.effect import EffectScorer
from ..evaluation.fluency import REFERENCE_MODEL, ReferenceModel
from ..steering import (
    BUILTIN_DIMENSIONS,
    ExtractionConfig,
    LoadedModel,
    Strengths,
    VectorSet,
    builtin_dataset,
    builtin_evaluation_set,
    generate,
)
from ..steering.cache import extract_cached
from ..steering.config import MAX_PERCENT
from ..steering.datasets import EvaluationSet

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Scale:
    """How much of each experiment to run. ``FULL`` is the published run, ``QUICK`` a smoke test."""

    name: str
    prompts: int  # held-out prompts per dimension
    max_new_tokens: int
    sweep: tuple[float, ...]  # E1: alpha in multiples of the vector set's alpha_max
    method_dimensions: tuple[str, ...]  # E1: dimensions the three extraction methods are compared on
    grid: tuple[float, ...]  # E3: strengths (percent) for culture x age
    crosstalk_prompts: int  # E3: prompts per dimension in the shared cross-talk prompt set
    users_per_dimension: int  # E4
    turns: int  # E4
    batch_size: int = 56  # E4 decodes every simulated user (50) in one batch


FULL = Scale(
    name="full",
    prompts=8,
    max_new_tokens=64,
    sweep=(-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
    method_dimensions=("cost", "time"),
    grid=(-100.0, -50.0, 0.0, 50.0, 100.0),
    crosstalk_prompts=3,
    users_per_dimension=10,
    turns=12,
)
QUICK = Scale(
    name="quick",
    prompts=2,
    max_new_tokens=12,
    sweep=(-2.0, -1.0, 0.0, 1.0, 2.0),
    method_dimensions=("cost",),
    grid=(-100.0, 100.0),
    crosstalk_prompts=1,
    users_per_dimension=1,
    turns=2,
)


@dataclass
class Section:
    """One experiment's part of the report: Markdown text, the files it links to, and its
    findings (one line each, set against the paper's claim)."""

    title: str
    markdown: str
    files: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


class Context:
    """The loaded model and metrics, shared by the experiments of one run."""

    def __init__(
        self,
        lm: LoadedModel,
        out: Path,
        scale: Scale,
        *,
        seed: int = 0,
        reference_model: str = REFERENCE_MODEL,
        progress: bool = True,
    ) -> None:
        self.lm = lm
        self.out = out
        self.scale = scale
        self.seed = seed
        self.dimensions: tuple[str, ...] = BUILTIN_DIMENSIONS
        self.reference_name = reference_model
        self._reference: ReferenceModel | None = None
        self._scorer: EffectScorer | None = None
        self._vector_sets: dict[tuple[str, str], VectorSet] = {}
        self._show_progress = progress
        self._bar: Any = None
        out.mkdir(parents=True, exist_ok=True)

    # -- models and data --------------------------------------------------------------------

    @property
    def scorer(self) -> EffectScorer:
        if self._scorer is None:
            self._scorer = EffectScorer()
        return self._scorer

    @property
    def reference(self) -> ReferenceModel:
        if self._reference is None:
            self._reference = ReferenceModel.load(self.reference_name)
        return self._reference

    def vector_set(self, dimension: str, method: str = "logistic") -> VectorSet:
        """The built-in dimension's vector set on this model (extracted once, then cached on disk)."""
        key = (dimension, method)
        if key not in self._vector_sets:
            self._vector_sets[key] = extract_cached(
                self.lm, builtin_dataset(dimension), ExtractionConfig(method=method), progress=False
            )
        return self._vector_sets[key]

    def vector_sets(self) -> list[VectorSet]:
        """Every dimension's vector set (logistic probe)."""
        return [self.vector_set(name) for name in self.dimensions]

    def prepare(self) -> None:
        """Extract (or load from the cache) every dimension's vector set up front."""
        for name in tqdm(
            self.dimensions, desc="vector sets", unit="dimension", disable=not self._show_progress
        ):
            self.vector_set(name)

    @staticmethod
    def evaluation(dimension: str) -> EvaluationSet:
        return builtin_evaluation_set(dimension)

    def prompts(self, dimension: str, count: int | None = None) -> list[str]:
        return list(self.evaluation(dimension).prompts[: count or self.scale.prompts])

    def effect(self, texts: Sequence[str], dimension: str) -> list[float]:
        """The effect metric of each text on ``dimension`` (positive pole minus negative pole)."""
        vector_set = self.vector_set(dimension)
        return self.scorer.effect(texts, vector_set.dimension, self.evaluation(dimension))

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        strengths: Sequence[Strengths | None],
        *,
        vector_sets: Sequence[VectorSet] | None = None,
        max_percent: float = MAX_PERCENT,
    ) -> list[str]:
        """Greedy answers, row ``i`` steered by ``strengths[i]``, in batches of the scale's size."""
        sets = list(vector_sets) if vector_sets is not None else self.vector_sets()
        answers: list[str] = []
        size = self.scale.batch_size
        for start in range(0, len(prompts), size):
            batch = generate(
                self.lm,
                prompts[start : start + size],
                vector_sets=sets,
                strengths=strengths[start : start + size],
                max_new_tokens=self.scale.max_new_tokens,
                max_percent=max_percent,
            )
            answers += batch
            if self._bar is not None:
                self._bar.update(len(batch))
        return answers

    @contextmanager
    def stage(self, description: str, answers: int) -> Iterator[None]:
        """A progress bar over the ``answers`` this stage generates."""
        self._bar = tqdm(total=answers, desc=description, unit="answer", disable=not self._show_progress)
        try:
            yield
        finally:
            self._bar.close()
            self._bar = None

    def note(self, message: str) -> None:
        tqdm.write(f"experiments: {message}")

    # -- output -----------------------------------------------------------------------------

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        path = self.out / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.out / name
        path.write_text(json.dumps(data, indent=2, default=_cell) + "\n", encoding="utf-8")
        return path

    def save_figure(self, figure: Figure, name: str) -> Path:
        import matplotlib.pyplot as plt

        path = self.out / name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5) if math.isfinite(value) else "nan"
    return value
