"""The method on a real model: SmolLM2-135M-Instruct and the five built-in dimensions.

Extraction runs for real (about four minutes per dimension on 2 cores, most of it sampling
answers for the functional range's repetition check) through the same on-disk cache as the
extraction worker, keyed by model weights, dataset, every extraction parameter, the range
prompts and the library version: a CI run extracts the five dimensions once, for whichever of
this module and `steerlab demo` runs first.
"""

from __future__ import annotations

import pytest

from steerlab.evaluation.judges import PRIMARY_JUDGE
from steerlab.experiments.sliders import run_sliders
from steerlab.steering import (
    BUILTIN_DIMENSIONS,
    LoadedModel,
    VectorSet,
    builtin_dataset,
)
from steerlab.steering.cache import extract_cached

# The second protocol (`steerlab experiments sliders`) on the first 24 development prompts, one
# sampled answer each (seed 0). Bars set from the development run of 2026-12-01 (38 prompts x 3
# seeds, docs/results/sliders/smollm2-135m-dev-logistic.json.gz) by scripts/slider_thresholds.py:
# the lowest +100% vs -100% shift on the primary judge over 300 draws of 24 of its prompts with one
# seed each (time and culture are weak sliders on this model: their bars only ask for a move).
DEV_PROMPTS = 24
MIN_SHIFT = {"cost": 0.127, "ambiance": 0.060, "age": 0.085, "time": 0.007, "culture": 0.004}
# The sliders whose rise (p < 0.01, prompt as unit) and second judge's sign held in every draw;
# time's and culture's did in 66% and 47% of draws, too few to test on 24 answers each.
RISE_WITH_BOTH_JUDGES = ("cost", "ambiance", "age")


@pytest.fixture(scope="module")
def vector_sets(smollm2: LoadedModel) -> dict[str, VectorSet]:
    return {name: extract_cached(smollm2, builtin_dataset(name)) for name in BUILTIN_DIMENSIONS}


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
def test_each_slider_moves_its_own_dimension_in_sampled_answers(smollm2: LoadedModel) -> None:
    results, answers, _ = run_sliders(smollm2, split="dev", seeds=1, prompt_count=DEV_PROMPTS, progress=False)
    assert len(answers) == DEV_PROMPTS * (1 + 4 * len(BUILTIN_DIMENSIONS))
    for result in results:
        name, shift = result.dimension, result.shift[PRIMARY_JUDGE].mean
        assert shift >= MIN_SHIFT[name], f"{name}: shift {shift:.3f} on {PRIMARY_JUDGE}"
        assert result.perplexity_ratio <= result.perplexity_bound, f"{name}: held-out perplexity"
        if name in RISE_WITH_BOTH_JUDGES:
            checks = result.checks()
            assert checks["rises"] and checks["judges agree"], f"{name}: {result.rank}, {result.shift}"
