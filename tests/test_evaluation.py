"""The metric code on hand-made inputs: known values for effect, perplexity, PNE and the statistics."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from steerlab.evaluation.effect import EffectScorer
from steerlab.evaluation.fluency import ReferenceModel, heldout_answers, steered_perplexity
from steerlab.evaluation.pne import fit_pne, normalised_effects
from steerlab.evaluation.stats import bootstrap_mean, bootstrap_statistic, least_squares
from steerlab.experiments.e4_learn import Ruler
from steerlab.experiments.users import TOLERANCE, replies, reply
from steerlab.steering import SteeringError, builtin_dataset, extract, generate, plan_rows
from steerlab.steering.datasets import Dimension, EvaluationSet

COST = Dimension("cost", "budget", "luxury", "")
REFERENCES = EvaluationSet(
    prompts=("Where should we eat?",),
    reference={
        "budget": ("Cheap noodle stall, huge bowls for three dollars, plastic stools.",),
        "luxury": ("Michelin-starred tasting menu with caviar, vintage champagne and a private sommelier.",),
    },
)


class AxisEmbedder:
    """Embeds each known text as a fixed unit vector, so the expected effect is exact."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        rows = torch.tensor([self.vectors[text] for text in texts], dtype=torch.float32)
        return rows / rows.norm(dim=1, keepdim=True)


def test_effect_on_hand_made_embeddings_has_known_values() -> None:
    (cheap,), (fancy,) = REFERENCES.reference["budget"], REFERENCES.reference["luxury"]
    embedder = AxisEmbedder({cheap: [1, 0, 0], fancy: [0, 1, 0], "both": [1, 1, 0], "neither": [0, 0, 1]})
    scorer = EffectScorer(embedder)  # type: ignore[arg-type]
    effects = scorer.effect([fancy, cheap, "both", "neither"], COST, REFERENCES)
    assert effects == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-6)


@pytest.fixture(scope="module")
def scorer() -> EffectScorer:
    return EffectScorer()


def test_effect_with_the_real_embedder_identical_text_and_opposite_poles(scorer: EffectScorer) -> None:
    (cheap,), (fancy,) = REFERENCES.reference["budget"], REFERENCES.reference["luxury"]
    negative, positive = scorer.pole_centroids(COST, REFERENCES)
    between = float(negative @ positive)
    # A text identical to the only positive reference has cosine 1 to its pole: effect = 1 - cos(poles).
    fancy_effect, cheap_effect = scorer.effect([fancy, cheap], COST, REFERENCES)
    assert fancy_effect == pytest.approx(1 - between, abs=1e-5)
    assert cheap_effect == pytest.approx(-(1 - between), abs=1e-5)  # opposite pole, opposite sign
    assert 0 < between < 0.9  # the two reviews are different texts, so the metric has room


def test_effect_ranks_unseen_texts_by_pole(scorer: EffectScorer) -> None:
    evaluation = EvaluationSet(
        (), {"budget": REFERENCES.reference["budget"] * 1, "luxury": REFERENCES.reference["luxury"]}
    )
    thrifty, lavish = scorer.effect(
        [
            "A cheap and cheerful street food stand, dinner for two under ten dollars.",
            "An elegant fine dining restaurant with a champagne list and white tablecloths.",
        ],
        COST,
        evaluation,
    )
    assert thrifty < 0 < lavish


def test_normalised_effects_divide_the_gain_by_the_perplexity_ratio() -> None:
    ys = normalised_effects([-1.0, 0.0, 1.0], [0.0, 0.1, 0.3], [20.0, 10.0, 40.0])
    assert ys.tolist() == pytest.approx([-0.05, 0.0, 0.05])


def test_pne_fit_recovers_a_known_curve() -> None:
    a, b = 2.0, 0.3
    alphas = np.linspace(-4, 4, 17)
    effects = 0.2 + np.tanh(a * alphas)  # so y(alpha) = tanh(a alpha) exp(-b alpha^2) exactly
    perplexities = 12.0 * np.exp(b * alphas**2)
    fit = fit_pne(alphas.tolist(), effects.tolist(), perplexities.tolist())
    dense = np.linspace(-4, 4, 400)
    expected = np.tanh(a * dense) * np.exp(-b * dense**2)
    assert fit.pne == pytest.approx(expected.max() - expected.min(), abs=1e-3)
    assert fit.curvature == pytest.approx(b, rel=1e-4)
    assert fit.r_squared > 0.999


def test_pne_is_zero_when_steering_moves_nothing() -> None:
    alphas = [-2.0, -1.0, 0.0, 1.0, 2.0]
    fit = fit_pne(alphas, [0.1] * 5, [10 * math.exp(0.2 * x * x) for x in alphas])
    assert fit.pne == pytest.approx(0.0, abs=1e-6)
    assert fit.measured_pne == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="three alphas"):
        fit_pne([0.0, 1.0], [0.0, 0.1], [1.0, 2.0])


def test_bootstrap_interval_and_least_squares_on_known_data() -> None:
    constant = bootstrap_mean([0.25] * 10)
    assert (constant.mean, constant.low, constant.high, constant.n) == pytest.approx((0.25, 0.25, 0.25, 10))
    spread = bootstrap_mean([-1.0, 1.0] * 20)
    assert spread.mean == 0.0 and spread.low < 0 < spread.high and spread.contains(0.0)
    shifted = bootstrap_mean([1.0, 1.2, 0.8, 1.1, 0.9] * 4)
    assert not shifted.contains(0.0) and shifted.low < 1.0 < shifted.high
    with pytest.raises(ValueError):
        bootstrap_mean([])
    design = np.array([[1.0, x, y] for x in (-1.0, 0.0, 1.0) for y in (-1.0, 1.0)])
    fit = least_squares(design, (0.5 + 2 * design[:, 1] - 0.25 * design[:, 2]).tolist())
    assert fit.coefficients.tolist() == pytest.approx([0.5, 2.0, -0.25])
    assert fit.standard_errors.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-7)


def test_a_bootstrapped_ratio_resamples_whole_rows() -> None:
    def ratio(means: np.ndarray) -> np.ndarray:
        return means[..., 1] / means[..., 0]

    # Every row holds the ratio 2 exactly: every resample does too.
    exact = bootstrap_statistic([[1.0, 2.0], [3.0, 6.0], [0.5, 1.0]], ratio)
    assert (exact.mean, exact.low, exact.high, exact.n) == pytest.approx((2.0, 2.0, 2.0, 3))
    # A ratio of means, not a mean of ratios: one large row dominates both columns.
    rows = [[1.0, 1.0]] * 10 + [[10.0, 40.0]]
    skewed = bootstrap_statistic(rows, ratio)
    assert skewed.mean == pytest.approx(50 / 20)
    assert skewed.low < 1.5 and skewed.high > 2.9  # resamples without (or twice with) that row
    with pytest.raises(ValueError, match="2-D"):
        bootstrap_statistic([1.0, 2.0], ratio)


@pytest.fixture(scope="module")
def uniform_model(tokenizer: Any) -> Any:
    """A tiny Llama whose output layer is zero: every next token has probability 1/vocab."""
    lm = make_tiny_model("llama", tokenizer)
    with torch.no_grad():
        lm.model.lm_head.weight.zero_()
    return lm


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(uniform_model: Any) -> None:
    vocabulary = uniform_model.model.config.vocab_size
    judge = ReferenceModel(uniform_model, batch_size=2)
    scores = judge.perplexities(
        ["Plan a trip.", "Lunch?", "Gift ideas?"], ["Go to Rome in May.", "", "A book."]
    )
    assert scores[0] == pytest.approx(vocabulary, rel=1e-4)
    assert math.isnan(scores[1])  # nothing to score
    assert scores[2] == pytest.approx(vocabulary, rel=1e-4)


def test_steered_perplexity_on_held_out_answers(uniform_model: Any, tokenizer: Any) -> None:
    assert len(heldout_answers()) >= 12
    vocabulary = uniform_model.model.config.vocab_size
    lm = make_tiny_model("llama", tokenizer)
    vector_set = extract(lm, builtin_dataset("cost"))
    unsteered, zero, steered = steered_perplexity(lm, vector_set, [0.0, 0.0, 4 * vector_set.alpha_max])
    assert zero == unsteered
    assert steered != unsteered  # the delta reaches the model
    # Whatever the steering, a model that ignores its hidden states stays uniform.
    vector_set_uniform = extract(uniform_model, builtin_dataset("cost"))
    flat = steered_perplexity(uniform_model, vector_set_uniform, [0.0, 3 * vector_set_uniform.alpha_max])
    assert flat == pytest.approx([vocabulary, vocabulary], rel=1e-4)


def test_sweeps_may_pass_the_functional_range_only_when_asked(tokenizer: Any) -> None:
    lm = make_tiny_model("llama", tokenizer)
    vector_set = extract(lm, builtin_dataset("cost"))
    with pytest.raises(SteeringError, match=r"outside -100\.\.100"):
        plan_rows([vector_set], [{"cost": 300.0}], lm=lm)
    plan = plan_rows([vector_set], [{"cost": 300.0}, {"cost": 100.0}], lm=lm, max_percent=400)
    layer = vector_set.selected_layers[0]
    delta = plan[vector_set.site][layer].delta
    assert torch.allclose(delta[0], 3 * delta[1])
    assert torch.allclose(delta[1], vector_set.alpha_max * vector_set.directions[layer])
    with pytest.raises(SteeringError, match=r"outside -400\.\.400"):
        generate(lm, ["Hi"], vector_sets=[vector_set], strengths=[{"cost": 500.0}], max_percent=400)


def test_a_simulated_user_reads_an_answer_on_the_ruler() -> None:
    ruler = Ruler(negative=-0.1, neutral=0.0, positive=0.2)
    assert ruler.perceive(0.2) == pytest.approx(100)
    assert ruler.perceive(-0.1) == pytest.approx(-100)
    assert ruler.perceive(0.1) == pytest.approx(50)
    assert ruler.perceive(1.0) == 150  # clipped: far past anything seen at full strength
    # A side that does not move reads with the half spread; a flat ruler never divides by 0.
    assert Ruler(-0.2, 0.0, 0.0).perceive(0.05) == pytest.approx(50)
    assert Ruler(0.0, 0.0, 0.0).perceive(0.01) == 150


def test_a_simulated_user_praises_or_complains_by_the_gap() -> None:
    rng = random.Random(0)
    bank = replies()
    assert reply("cost", TOLERANCE - 1, rng) in bank["praise"]
    assert reply("cost", 80, rng) in bank["cost"]["toward_positive"]["strong"]
    assert reply("cost", -30, rng) in bank["cost"]["toward_negative"]["mild"]
    assert reply("time", 61, rng) in bank["time"]["toward_positive"]["strong"]
