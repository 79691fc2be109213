"""The second evaluation's data (issue 21), checked as data: big enough, one pole per text,
development and test prompts disjoint, and nothing shared with the extraction datasets.

``services/steerlab/data/eval/v2/``: per-pole reference texts for the effect judge (reviews,
listings, posts and the like, a genre apart from the assistant answers the vectors are
extracted from) and two prompt sets, development and test, written by different authors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from steerlab.steering.datasets import BUILTIN_DIMENSIONS, builtin_dataset

DATA = Path(__file__).resolve().parent.parent / "services" / "steerlab" / "data" / "eval" / "v2"
MIN_REFERENCES_PER_POLE = 150
MIN_PROMPTS = 30
DOMAINS = {"travel", "restaurants", "recipes", "gifts"}
# Two prompts are "the same question" when they share this much of their content words.
MAX_SHARED_WORDS = 0.3
FUNCTION_WORDS = frozenset(
    {"a", "an", "and", "any", "are", "be", "can", "do", "for", "from", "get", "good", "have", "how"}
    | {"i", "in", "is", "it", "make", "me", "my", "of", "on", "or", "should", "so", "some", "that"}
    | {"the", "this", "to", "we", "what", "where", "with", "you"}
)


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) - FUNCTION_WORDS


@pytest.mark.parametrize("dimension", BUILTIN_DIMENSIONS)
def test_each_pole_has_enough_distinct_references_of_its_own(dimension: str) -> None:
    references = load(f"references/{dimension}.json")
    poles = builtin_dataset(dimension).dimension
    assert (references["negative_pole"], references["positive_pole"]) == (
        poles.negative_pole,
        poles.positive_pole,
    )
    negative, positive = references["negative"], references["positive"]
    for texts in (negative, positive):
        assert len(texts) >= MIN_REFERENCES_PER_POLE
        assert len(set(texts)) == len(texts)
    assert not set(negative) & set(positive)
    completions = {example.completion for example in builtin_dataset(dimension).examples}
    assert not completions & (set(negative) | set(positive))


def test_development_and_test_prompts_are_disjoint_sets_of_first_questions() -> None:
    development, test = load("prompts_dev.json"), load("prompts_test.json")
    assert (development["split"], test["split"]) == ("dev", "test")
    for prompts in (development["prompts"], test["prompts"]):
        assert len(prompts) >= MIN_PROMPTS
        assert {prompt["domain"] for prompt in prompts} == DOMAINS
    close = [
        (a["text"], b["text"])
        for a in development["prompts"]
        for b in test["prompts"]
        if len(content_words(a["text"]) & content_words(b["text"]))
        >= MAX_SHARED_WORDS * len(content_words(a["text"]) | content_words(b["text"]))
    ]
    assert not close, close


def test_the_range_prompts_are_apart_from_the_evaluation_prompts() -> None:
    """The functional range samples answers to these at extraction: were they close to the
    evaluation's prompts, the range would be tuned on what the sliders are judged on."""
    shipped = json.loads((DATA.parent.parent / "range" / "prompts.json").read_text(encoding="utf-8"))
    assert shipped["split"] == "range" and len(shipped["prompts"]) >= MIN_PROMPTS
    evaluation = load("prompts_dev.json")["prompts"] + load("prompts_test.json")["prompts"]
    close = [
        (a["text"], b["text"])
        for a in shipped["prompts"]
        for b in evaluation
        if len(content_words(a["text"]) & content_words(b["text"]))
        >= MAX_SHARED_WORDS * len(content_words(a["text"]) | content_words(b["text"]))
    ]
    assert not close, close
