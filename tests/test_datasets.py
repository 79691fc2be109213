"""Built-in datasets meet the method's needs; bad custom datasets fail with clear errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import parse

from steerlab.steering import (
    BUILTIN_DIMENSIONS,
    DatasetError,
    builtin_dataset,
    builtin_evaluation_set,
    load_dataset,
)

EXPECTED_POLES = {
    "cost": ("budget", "luxury"),
    "ambiance": ("touristy", "hipster"),
    "age": ("kids", "adults"),
    "time": ("evening", "morning"),
    "culture": ("asian", "american"),
}

HEADER = {"dimension": "noise", "negative_pole": "quiet", "positive_pole": "lively"}


def examples(quiet: int, lively: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"Where should I go {i}?",
            "completion": f"A calm reading room number {i}.",
            "label": "quiet",
        }
        for i in range(quiet)
    ] + [
        {
            "prompt": f"Where should I go {i}?",
            "completion": f"A packed dance hall number {i}.",
            "label": "lively",
        }
        for i in range(lively)
    ]


@pytest.mark.parametrize("name", BUILTIN_DIMENSIONS)
def test_builtin_dimension_is_paired_and_large_enough(name: str) -> None:
    dataset = builtin_dataset(name)
    negative, positive = EXPECTED_POLES[name]
    assert (dataset.dimension.negative_pole, dataset.dimension.positive_pole) == (negative, positive)
    assert dataset.count(negative) >= 50 and dataset.count(positive) >= 50
    labels_per_prompt = Counter(e.prompt for e in dataset.examples)
    paired = sum(1 for count in labels_per_prompt.values() if count == 2)
    assert paired >= 0.8 * len(labels_per_prompt)
    assert len({e.prompt for e in dataset.examples}) >= 40, "prompts must vary"


@pytest.mark.parametrize("name", BUILTIN_DIMENSIONS)
def test_evaluation_set_is_held_out(name: str) -> None:
    dataset = builtin_dataset(name)
    evaluation = builtin_evaluation_set(name)
    training_prompts = {e.prompt for e in dataset.examples}
    completions = {e.completion for e in dataset.examples}
    assert len(evaluation.prompts) >= 8
    assert not training_prompts & set(evaluation.prompts)
    assert set(evaluation.reference) == set(EXPECTED_POLES[name])
    for texts in evaluation.reference.values():
        assert len(texts) >= 20
        assert not completions & set(texts)


def test_content_hash_depends_on_content_only() -> None:
    first = parse(HEADER, examples(10, 10))
    second = parse(HEADER, examples(10, 10))
    third = parse(HEADER, examples(10, 11))
    assert first.content_hash == second.content_hash != third.content_hash


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (
            HEADER,
            [*examples(10, 10)[:-1], {"prompt": "p", "completion": "c", "label": "loud"}],
            "unknown pole 'loud'",
        ),
        (HEADER, examples(9, 9), "too few examples for pole 'quiet'"),
        (HEADER, examples(10, 13), "unbalanced poles"),
        (
            HEADER,
            [*examples(10, 10), {"prompt": "p", "completion": "  ", "label": "quiet"}],
            "'completion' must be a non-empty string",
        ),
        (HEADER, [*examples(10, 10), examples(1, 0)[0]], "duplicate completion"),
        ({"negative_pole": "a", "positive_pole": "b"}, examples(10, 10), "first line must be the header"),
        ({**HEADER, "dimension": "Bad Name"}, examples(10, 10), "must match"),
        ({**HEADER, "positive_pole": "quiet"}, examples(10, 10), "poles must differ"),
    ],
)
def test_bad_dataset_is_rejected_with_a_clear_error(
    header: dict[str, Any], rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        parse(header, rows)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"dimension": "noise", "negative_pole": "quiet", "positive_pole": "lively"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"broken.jsonl:2: invalid JSON"):
        load_dataset(path)


def test_missing_file_and_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="unknown dimension 'price'"):
        builtin_dataset("price")
