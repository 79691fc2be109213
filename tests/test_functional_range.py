"""The functional range: alpha_max keeps held-out perplexity and sampled answers' repetition
within their bounds, and says which of the two limited it."""

from __future__ import annotations

from typing import Any

import pytest

from steerlab.steering import ContrastiveDataset, ExtractionConfig, LoadedModel, extract, functional_range
from steerlab.steering.activations import encode_examples
from steerlab.steering.chat import encode_prompt
from steerlab.steering.functional_range import estimate_alpha_max, mean_repetition


def _range_inputs(lm: LoadedModel, dataset: ContrastiveDataset) -> dict[str, Any]:
    vector_set = extract(lm, dataset, ExtractionConfig(top_k=2))
    prompts = list(dict.fromkeys(e.prompt for e in dataset.examples))[:3]
    return {
        "examples": encode_examples(lm.tokenizer, dataset.examples[:8], 32),
        "site": vector_set.site,
        "directions": {layer: vector_set.directions[layer] for layer in vector_set.selected_layers},
        "activation_norm": float(vector_set.parameters["mean_activation_norm"]),
        "prompts": [encode_prompt(lm.tokenizer, prompt) for prompt in prompts],
    }


def test_repetition_lowers_the_range_where_perplexity_alone_would_not(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_models["llama"]
    inputs = _range_inputs(lm, tiny_dataset)
    examples = inputs.pop("examples")
    by_perplexity = estimate_alpha_max(lm, examples, **{**inputs, "prompts": ()})
    assert by_perplexity.repetition_bound is None and by_perplexity.limited_by in ("perplexity", "cap")

    # Answers start looping at a third of the perplexity's range: 1% repeated, then rising to
    # the limit of 3% (1.5 x the 2% floor; the 1% baseline is under the floor) at 1.2 x knee.
    knee = by_perplexity.alpha_max / 3
    calls: list[float] = []

    def looping(lm: LoadedModel, prompts: Any, site: str, directions: Any, alpha: float) -> float:
        calls.append(alpha)
        return 0.01 + 0.1 * max(0.0, abs(alpha) - knee) / knee

    monkeypatch.setattr(functional_range, "mean_repetition", looping)
    estimate = estimate_alpha_max(lm, examples, **inputs, repetition_bound=1.5)
    assert estimate.limited_by == "repetition" and not estimate.capped
    crossing, resolution = (
        1.2 * knee,
        by_perplexity.alpha_max / 2**functional_range.REPETITION_BISECTION_STEPS,
    )
    assert crossing - resolution <= estimate.alpha_max <= crossing
    assert estimate.baseline_repetition == pytest.approx(0.01)
    limit = 1.5 * functional_range.REPETITION_FLOOR  # the 1% baseline is under the floor
    assert all(rate <= limit for alpha, rate in estimate.repetition.items() if alpha <= estimate.alpha_max)
    assert {-a for a in calls if a < 0} == {a for a in calls if a > 0}  # both poles, every alpha
    report = estimate.to_dict()
    assert report["limited_by"] == "repetition" and report["repetition_bound"] == 1.5

    monkeypatch.setattr(functional_range, "mean_repetition", lambda *args: 0.01)
    fluent = estimate_alpha_max(lm, examples, **inputs, repetition_bound=1.5)
    assert fluent.alpha_max == by_perplexity.alpha_max and fluent.limited_by == by_perplexity.limited_by


def test_mean_repetition_samples_the_same_answers_for_the_same_alpha(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> None:
    lm = tiny_models["llama"]
    inputs = _range_inputs(lm, tiny_dataset)
    site, directions, prompts = inputs["site"], inputs["directions"], inputs["prompts"]
    alpha = 2 * inputs["activation_norm"]
    first = mean_repetition(lm, prompts, site, directions, alpha)
    assert 0.0 <= first <= 1.0
    assert mean_repetition(lm, prompts, site, directions, alpha) == first  # seeded, so comparable


def test_an_extraction_records_what_limited_its_range(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> None:
    vector_set = extract(tiny_models["llama"], tiny_dataset, ExtractionConfig(top_k=2))
    report = vector_set.functional_range
    assert report["limited_by"] in ("perplexity", "repetition", "cap")
    assert report["repetition_bound"] == 1.5 and report["repetition"]
    limit = 1.5 * max(report["baseline_repetition"], functional_range.REPETITION_FLOOR)
    assert all(rate <= limit for alpha, rate in report["repetition"] if alpha <= vector_set.alpha_max)
    assert vector_set.parameters["repetition_bound"] == 1.5
