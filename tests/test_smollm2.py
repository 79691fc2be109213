"""The method on a real model: SmolLM2-135M-Instruct and the five built-in dimensions.

Extraction runs for real (about four minutes per dimension on 2 cores, most of it sampling
answers for the functional range's repetition check) through the same on-disk cache as the
extraction worker, keyed by model weights, dataset, every extraction parameter, the range
prompts and the library version: a CI run extracts the five dimensions once, for whichever of
this module and `steerlab demo` runs first.
"""

from __future__ import annotations

import pytest

from steerlab.evaluation import EffectScorer
from steerlab.steering import (
    BUILTIN_DIMENSIONS,
    LoadedModel,
    VectorSet,
    builtin_dataset,
    builtin_evaluation_set,
    generate,
)
from steerlab.steering.cache import extract_cached

# The answer to each prompt at +100% must lean further toward the positive pole than at -100%,
# on average by this much (cosine-similarity difference between the two pole centroids).
EFFECT_MARGIN = 0.02


@pytest.fixture(scope="module")
def vector_sets(smollm2: LoadedModel) -> dict[str, VectorSet]:
    return {name: extract_cached(smollm2, builtin_dataset(name)) for name in BUILTIN_DIMENSIONS}


@pytest.fixture(scope="module")
def scorer() -> EffectScorer:
    return EffectScorer()


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_DIMENSIONS)
def test_selected_layers_separate_the_poles_on_held_out_examples(
    name: str, vector_sets: dict[str, VectorSet]
) -> None:
    vector_set = vector_sets[name]
    selected = vector_set.selected_scores
    assert len(selected) == vector_set.parameters["top_k"] == 22
    assert vector_set.heldout_accuracy >= 0.9, [round(s.heldout_accuracy, 3) for s in selected]
    # Selection really is by held-out accuracy: no unselected layer beats a selected one.
    worst_selected = min(s.heldout_accuracy for s in selected)
    assert all(s.heldout_accuracy <= worst_selected for s in vector_set.layer_scores if s not in selected)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_DIMENSIONS)
def test_full_strength_moves_answers_toward_the_positive_pole(
    name: str, smollm2: LoadedModel, vector_sets: dict[str, VectorSet], scorer: EffectScorer
) -> None:
    vector_set = vector_sets[name]
    evaluation = builtin_evaluation_set(name)
    prompts = list(evaluation.prompts)
    rows = [{name: -100.0}] * len(prompts) + [{name: 100.0}] * len(prompts)
    answers = generate(smollm2, prompts * 2, vector_sets=[vector_set], strengths=rows, max_new_tokens=80)
    effects = scorer.effect(answers, vector_set.dimension, evaluation)
    negative, positive = effects[: len(prompts)], effects[len(prompts) :]
    shift = (sum(positive) - sum(negative)) / len(prompts)
    assert shift >= EFFECT_MARGIN, f"{name}: mean effect shift {shift:.3f}"
    assert sum(p > n for p, n in zip(positive, negative, strict=True)) > len(prompts) / 2
