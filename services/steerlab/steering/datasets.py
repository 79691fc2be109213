"""Contrastive datasets: one preference dimension, examples labelled with one of its two poles.

File format (JSON Lines, UTF-8)::

    {"dimension": "cost", "negative_pole": "budget", "positive_pole": "luxury",
     "description": "How much the user wants to spend."}
    {"prompt": "Where should I eat in Lisbon?", "completion": "Try the tascas ...", "label": "budget"}
    ...

The first line is the header; every other line is one example whose ``label`` names a pole.
Validation rules (each breach raises :class:`DatasetError` with the line number):

- the header has a dimension name matching ``[a-z][a-z0-9_-]*`` and two distinct pole names;
- every example has non-empty ``prompt``, ``completion`` and ``label`` strings;
- every label is one of the two poles;
- no completion appears twice;
- each pole has at least ``MIN_EXAMPLES_PER_POLE`` examples;
- the poles are balanced: the larger has at most ``MAX_POLE_RATIO`` times the smaller's count.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DatasetError, InvalidArgumentError

MIN_EXAMPLES_PER_POLE = 10
MAX_POLE_RATIO = 1.2
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

BUILTIN_DIMENSIONS = ("cost", "ambiance", "age", "time", "culture")


def check_name(kind: str, name: str) -> str:
    """A dimension or alias name as the registry and jobs accept it; a clear error otherwise."""
    if not NAME_PATTERN.match(name):
        raise InvalidArgumentError(
            f"invalid {kind} name {name!r}: use a lower-case letter, then up to 62 of a-z, 0-9, '_' or '-'"
        )
    return name


@dataclass(frozen=True)
class Dimension:
    """A preference axis between a negative and a positive pole."""

    name: str
    negative_pole: str
    positive_pole: str
    description: str = ""

    def sign(self, pole: str) -> int:
        """+1 for the positive pole, -1 for the negative one."""
        if pole == self.positive_pole:
            return 1
        if pole == self.negative_pole:
            return -1
        raise DatasetError(
            f"unknown pole {pole!r} for dimension {self.name!r}: "
            f"expected {self.negative_pole!r} or {self.positive_pole!r}"
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "negative_pole": self.negative_pole,
            "positive_pole": self.positive_pole,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dimension:
        return cls(
            str(data["name"]),
            str(data["negative_pole"]),
            str(data["positive_pole"]),
            str(data.get("description", "")),
        )


@dataclass(frozen=True)
class Example:
    """One assistant answer to a prompt, showing one pole of the dimension."""

    prompt: str
    completion: str
    label: str


@dataclass(frozen=True)
class ContrastiveDataset:
    """A validated dimension with its labelled examples."""

    dimension: Dimension
    examples: tuple[Example, ...]

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical content: same data, same hash, whatever the formatting."""
        canonical = json.dumps(
            {
                "dimension": self.dimension.to_dict(),
                "examples": [[e.prompt, e.completion, e.label] for e in self.examples],
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def labels(self) -> list[int]:
        """+1/-1 per example, in order."""
        return [self.dimension.sign(e.label) for e in self.examples]

    def count(self, pole: str) -> int:
        return sum(1 for e in self.examples if e.label == pole)


def _require_text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {key!r} must be a non-empty string")
    return value


def _parse_header(record: dict[str, Any], where: str) -> Dimension:
    if "dimension" not in record:
        raise DatasetError(
            f"{where}: the first line must be the header "
            '{"dimension": ..., "negative_pole": ..., "positive_pole": ...}'
        )
    name = _require_text(record, "dimension", where)
    if not NAME_PATTERN.match(name):
        raise DatasetError(f"{where}: dimension name {name!r} must match {NAME_PATTERN.pattern}")
    negative = _require_text(record, "negative_pole", where)
    positive = _require_text(record, "positive_pole", where)
    if negative == positive:
        raise DatasetError(f"{where}: the two poles must differ (both are {negative!r})")
    description = record.get("description", "")
    return Dimension(name, negative, positive, description if isinstance(description, str) else "")


def _parse_example(record: dict[str, Any], dimension: Dimension, where: str) -> Example:
    example = Example(
        prompt=_require_text(record, "prompt", where),
        completion=_require_text(record, "completion", where),
        label=_require_text(record, "label", where),
    )
    if example.label not in (dimension.negative_pole, dimension.positive_pole):
        raise DatasetError(
            f"{where}: unknown pole {example.label!r}; expected "
            f"{dimension.negative_pole!r} or {dimension.positive_pole!r}"
        )
    return example


def _check_balance(dataset: ContrastiveDataset, source: str) -> None:
    dimension = dataset.dimension
    counts = {pole: dataset.count(pole) for pole in (dimension.negative_pole, dimension.positive_pole)}
    for pole, count in counts.items():
        if count < MIN_EXAMPLES_PER_POLE:
            raise DatasetError(
                f"{source}: too few examples for pole {pole!r}: {count} "
                f"(at least {MIN_EXAMPLES_PER_POLE} needed)"
            )
    smaller, larger = sorted(counts.values())
    if larger > MAX_POLE_RATIO * smaller:
        raise DatasetError(
            f"{source}: unbalanced poles {counts}; the larger pole may have at most "
            f"{MAX_POLE_RATIO:g}x the examples of the smaller"
        )


def parse_dataset(lines: list[str], source: str = "<dataset>") -> ContrastiveDataset:
    """Parse and validate JSON Lines text into a dataset."""
    records: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source}:{number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DatasetError(f"{source}:{number}: each line must be a JSON object")
        records.append((number, record))
    if not records:
        raise DatasetError(f"{source}: the dataset is empty")
    first_line, header = records[0]
    dimension = _parse_header(header, f"{source}:{first_line}")
    examples: list[Example] = []
    seen_completions: dict[str, int] = {}
    for number, record in records[1:]:
        example = _parse_example(record, dimension, f"{source}:{number}")
        key = example.completion.strip()
        if key in seen_completions:
            raise DatasetError(
                f"{source}:{number}: duplicate completion (same text as line {seen_completions[key]})"
            )
        seen_completions[key] = number
        examples.append(example)
    dataset = ContrastiveDataset(dimension, tuple(examples))
    _check_balance(dataset, source)
    return dataset


def load_dataset(path: str | Path) -> ContrastiveDataset:
    """Load and validate a contrastive dataset from a JSON Lines file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text") from exc
    return parse_dataset(text.splitlines(), str(path))


def package_data_file(*parts: str) -> Path:
    """A file shipped under ``steerlab/data/`` (datasets, evaluation sets, LEARN's examples)."""
    return Path(str(resources.files("steerlab").joinpath("data", *parts)))


def builtin_dataset(name: str) -> ContrastiveDataset:
    """One of the five built-in dimensions: cost, ambiance, age, time, culture."""
    if name not in BUILTIN_DIMENSIONS:
        raise DatasetError(
            f"unknown dimension {name!r}; built-in dimensions: {', '.join(BUILTIN_DIMENSIONS)}"
        )
    return load_dataset(package_data_file("dimensions", f"{name}.jsonl"))


def builtin_dimensions() -> list[Dimension]:
    """The five built-in dimensions, in their usual order."""
    return [builtin_dataset(name).dimension for name in BUILTIN_DIMENSIONS]


@dataclass(frozen=True)
class EvaluationSet:
    """Held-out prompts and per-pole reference texts of a built-in dimension.

    Never used for extraction: the prompts differ from the training prompts, and the
    reference texts are reviews and descriptions, not assistant answers.
    """

    prompts: tuple[str, ...]
    reference: dict[str, tuple[str, ...]]


def builtin_evaluation_set(name: str) -> EvaluationSet:
    builtin_dataset(name)  # validates the name
    data = json.loads(package_data_file("eval", f"{name}.json").read_text(encoding="utf-8"))
    return EvaluationSet(
        prompts=tuple(data["prompts"]),
        reference={pole: tuple(texts) for pole, texts in data["reference"].items()},
    )
