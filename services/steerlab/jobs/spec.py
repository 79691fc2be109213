"""What an extraction job extracts: the model, the dataset and every core parameter.

A spec is checked when it is submitted (the dataset is parsed, the model is looked up, the
parameters are validated as far as they can be without loading the model), so most mistakes
are refused at once with INVALID_ARGUMENT or NOT_FOUND. What needs the model itself (a top-k
larger than its depth, say) fails the job, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from steerlab.steering.catalog import BUILTIN_MODELS
from steerlab.steering.config import ExtractionConfig
from steerlab.steering.datasets import ContrastiveDataset, builtin_dataset, check_name, parse_dataset
from steerlab.steering.errors import InvalidArgumentError, ModelLoadError

MAX_DATASET_BYTES = 8 * 1024 * 1024
# Enough for any model a worker can load; the real depth is checked by the worker.
_ANY_DEPTH = 10_000


@dataclass(frozen=True)
class ExtractionJobSpec:
    """One extraction: ``dimension`` names a built-in dataset, or ``dataset`` holds a custom one."""

    model: str
    dimension: str = ""
    dataset: str = ""  # JSON Lines text
    config: ExtractionConfig = field(default_factory=ExtractionConfig)
    alias: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    author: str = ""

    def load_dataset(self) -> ContrastiveDataset:
        if self.dataset:
            return parse_dataset(self.dataset.splitlines(), source="the uploaded dataset")
        return builtin_dataset(self.dimension)

    def checked(self) -> tuple[ExtractionJobSpec, ContrastiveDataset]:
        """Validate everything that can be checked without loading the model.

        Returns the spec with ``dimension`` filled in from a custom dataset, and the dataset.
        """
        if not self.model:
            raise InvalidArgumentError("no model given: name a built-in model or a model directory")
        if bool(self.dimension) == bool(self.dataset):
            raise InvalidArgumentError("give either a built-in dimension or a custom dataset, not both")
        if len(self.dataset.encode()) > MAX_DATASET_BYTES:
            raise InvalidArgumentError(
                f"the dataset is {len(self.dataset.encode())} bytes; the limit is {MAX_DATASET_BYTES}"
            )
        if self.alias:
            check_name("alias", self.alias)
        self.config.validate(_ANY_DEPTH)
        check_model_name(self.model)
        dataset = self.load_dataset()
        return replace(self, dimension=dataset.dimension.name), dataset

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExtractionJobSpec:
        data: dict[str, Any] = json.loads(text)
        return cls(**{**data, "config": ExtractionConfig(**data["config"])})


def check_model_name(model: str) -> None:
    """A built-in model, or a model directory named by an absolute path.

    The directory is looked for by the worker that runs the job, which may be another machine,
    so it is not looked for here; a worker that lacks it fails the job and says so.
    """
    if model not in BUILTIN_MODELS and not Path(model).is_absolute():
        raise ModelLoadError(
            f"no model {model!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}); give a model "
            "directory as an absolute path on the workers' machines"
        )
