"""The second evaluation protocol (issue 21): its judges, its statistics, its fluency measure,
and `steerlab experiments sliders` end to end on a tiny model.

The judges are fitted on the v2 reference texts (``data/eval/v2/references``); their lexicon's
word threshold was chosen on the contrastive datasets' answer pairs. Here they are checked on
texts neither saw: the first protocol's reference texts (``data/eval/<dimension>.json``),
written earlier by another author, in other words.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from steerlab.evaluation.judges import JUDGES, PRIMARY_JUDGE, SECOND_JUDGE, Judges, protocol_prompts
from steerlab.evaluation.lexicon import PRIOR_SIZE, Lexicon, content_words
from steerlab.evaluation.stats import clustered_spearman
from steerlab.experiments.sliders import Answer, SliderResult, summarise
from steerlab.steering import BUILTIN_DIMENSIONS, builtin_dataset, builtin_evaluation_set
from steerlab.steering.wordstats import repeated_ngram_rate

# Set before the judges ever saw these texts: clearly better than chance on every pole, well
# under what both judges score on their development data (every dataset answer pair in order).
MIN_UNSEEN_ACCURACY = 0.75


def test_content_words_drop_stop_words_and_fold_plurals() -> None:
    assert content_words("The kids' meals are all under five dollars!") == ["kid", "meal", "dollar"]
    assert content_words("famous glass bus") == ["famous", "glass", "bus"]


def test_a_lexicon_weighs_the_words_that_tell_the_poles_apart() -> None:
    cheap = ["cheap noodles for two dollars"] * 20 + ["a cheap stall near the market"] * 10
    fancy = ["a private chef and champagne"] * 20 + ["champagne at the private terrace"] * 10
    shared = ["the market sells noodles and champagne"] * 5
    lexicon = Lexicon.fit(cheap, fancy, cheap + fancy + shared)
    assert lexicon.weights["champagne"] > 0 > lexicon.weights["cheap"]
    assert "the" not in lexicon.weights and "and" not in lexicon.weights
    assert lexicon.score("champagne with a private chef") > 0 > lexicon.score("two cheap dollars")
    assert lexicon.score("") == 0.0 and lexicon.score("the and of") == 0.0
    # One weight by hand (Monroe et al. 2008, eq. 16 and 18): "champagne" appears 30 times among
    # the 90 content words of the positive pole, never among the 100 of the negative one.
    background = Counter(w for text in cheap + fancy + shared for w in content_words(text))
    prior = PRIOR_SIZE * (background["champagne"] + 1) / (sum(background.values()) + len(background))
    high, low = 30 + prior, 0 + prior
    delta = math.log(high / (90 + PRIOR_SIZE - high)) - math.log(low / (100 + PRIOR_SIZE - low))
    assert lexicon.weights["champagne"] == pytest.approx(delta / math.sqrt(1 / high + 1 / low))


@pytest.fixture(scope="module")
def judges() -> Judges:
    return Judges()


@pytest.mark.parametrize("dimension", BUILTIN_DIMENSIONS)
def test_both_judges_read_texts_they_never_saw_by_pole(judges: Judges, dimension: str) -> None:
    poles = builtin_dataset(dimension).dimension
    reference = builtin_evaluation_set(dimension).reference
    negative, positive = list(reference[poles.negative_pole]), list(reference[poles.positive_pole])
    scores = judges.score(negative + positive)
    for judge in JUDGES:
        effect = np.asarray(scores[judge][dimension])
        low, high = effect[: len(negative)], effect[len(negative) :]
        # Pairwise: a positive-pole text scores above a negative-pole one (AUC).
        auc = float(np.mean(high[:, None] > low[None, :]))
        assert auc >= MIN_UNSEEN_ACCURACY, f"{judge} on {dimension}: AUC {auc:.2f}"


def test_repeated_ngram_rate_counts_only_what_repeats() -> None:
    assert repeated_ngram_rate("one two three four five six") == 0.0
    assert repeated_ngram_rate("La France " * 4) == pytest.approx(3 / 5)  # 5 four-grams, 2 distinct
    assert repeated_ngram_rate("too short") == 0.0


def test_clustered_spearman_sees_a_trend_and_not_what_prompts_differ_in() -> None:
    rng = np.random.default_rng(3)
    prompts = np.repeat(np.arange(20), 15)
    strengths = np.tile(np.repeat([-100.0, -50.0, 0.0, 50.0, 100.0], 3), 20)
    per_prompt = rng.normal(0, 1, 20)[prompts]  # large differences between prompts, no trend
    trend = clustered_spearman(strengths, per_prompt + 0.003 * strengths + rng.normal(0, 0.3, 300), prompts)
    assert trend.rho > 0.1 and trend.p_value < 0.01
    flat = [
        clustered_spearman(strengths, per_prompt + rng.normal(0, 0.3, 300), prompts, seed=s)
        for s in range(20)
    ]
    assert sum(test.p_value < 0.05 for test in flat) <= 4  # about 1 in 20 under no effect
    # Prompts whose effect follows a value that never varies within the prompt: a strong pooled
    # correlation, yet no prompt shows a trend of its own.
    level = rng.normal(0, 1, 20)[prompts]
    between = clustered_spearman(level, level + rng.normal(0, 0.1, 300), prompts)
    assert between.rho > 0.9 and between.p_value > 0.5
    # Slopes that differ by prompt around zero are no trend either, however many answers.
    slopes = rng.normal(0, 0.004, 20)[prompts]
    mixed = [clustered_spearman(strengths, slopes * strengths, prompts, seed=s) for s in range(5)]
    assert all(test.p_value > 0.01 for test in mixed)


def _synthetic_run(own: float, cross: float) -> list[SliderResult]:
    """Two prompts, two seeds; 'cost' moves its own effect by ``own`` and age's by ``cross``
    per 100% of strength."""
    answers, scores = [], {judge: {"cost": [], "age": []} for judge in JUDGES}  # type: ignore[var-annotated]
    rng = np.random.default_rng(0)
    for strength in (-100.0, -50.0, 0.0, 50.0, 100.0):
        for prompt in range(2):
            for seed in range(2):
                answers.append(Answer(prompt, seed, "cost" if strength else "", strength, "a b c d e"))
                noise = rng.normal(0, 0.001)
                for judge in JUDGES:
                    scores[judge]["cost"].append(own * strength / 100 + noise)
                    scores[judge]["age"].append(cross * strength / 100)

    vector_set = SimpleNamespace(parameters={"perplexity_bound": 1.5})
    return summarise(answers, scores, {"cost": vector_set}, {"cost": 1.2})  # type: ignore[dict-item]


def test_a_slider_passes_when_it_moves_its_own_dimension_and_fails_on_cross_talk() -> None:
    (clean,) = _synthetic_run(own=0.05, cross=0.01)
    assert clean.shift[PRIMARY_JUDGE].mean == pytest.approx(0.10, abs=0.01)
    assert clean.crosstalk["age"] == pytest.approx(0.02)
    assert clean.checks()["own over cross-talk"] and clean.checks()["judges agree"]
    assert clean.repetition_ratio.mean == 1.0 and clean.checks()["repetition"]  # nothing repeats
    (entangled,) = _synthetic_run(own=0.05, cross=0.04)
    assert not entangled.checks()["own over cross-talk"]
    assert entangled.largest_crosstalk[0] == "age"
    assert entangled.largest_crosstalk[1] == pytest.approx(0.08)
    (backwards,) = _synthetic_run(own=-0.05, cross=0.0)
    assert not backwards.checks()["shift"] and not backwards.checks()["judges agree"]


def test_the_sliders_command_runs_end_to_end_and_writes_every_answer(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "sliders.json"
    command = [sys.executable, "-m", "steerlab.cli", "experiments", "sliders", "--model", str(tiny_model_dir)]
    result = subprocess.run(
        [
            *command,
            "--prompts",
            "2",
            "--seeds",
            "2",
            "--max-new-tokens",
            "6",
            "--dimensions",
            "cost,age",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [r["dimension"] for r in data["results"]] == ["cost", "age"]
    # 2 prompts x 2 seeds, unsteered once plus 2 dimensions x 4 non-zero strengths.
    assert len(data["answers"]) == 2 * 2 * (1 + 2 * 4)
    assert {a["prompt"] for a in data["answers"]} == {0, 1}
    # Every answer keeps its score on every dimension, by both judges, steered or not.
    assert all(
        set(a["scores"][judge]) == set(BUILTIN_DIMENSIONS) for a in data["answers"] for judge in JUDGES
    )
    for row in data["results"]:
        assert set(row["shift"]) == {PRIMARY_JUDGE, SECOND_JUDGE} and set(row["crosstalk"]) == set(
            BUILTIN_DIMENSIONS
        )
        assert (
            row["repetition_ratio"]["low"]
            <= row["repetition_ratio"]["mean"]
            <= row["repetition_ratio"]["high"]
        )
    steered_rows = [line.split(" |")[0] for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "| cost" in steered_rows and "| ambiance" not in steered_rows and "Cross-talk" in result.stdout
    assert protocol_prompts("dev")[0] not in protocol_prompts("test")
    bad = subprocess.run([*command, "--seeds", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--seeds must be at least 1" in bad.stderr
    unknown = subprocess.run(
        [*command, "--dimensions", "cost,noise"], capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode != 0 and "unknown: noise" in unknown.stderr
