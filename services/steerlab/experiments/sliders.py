"""Do the five sliders each do what they say? The second evaluation protocol (issue 21).

On the ``dev`` prompts (tune on them) or the ``test`` prompts (report once), every prompt is
answered unsteered and with each built-in dimension alone at each strength, sampled as in the
paper (temperature 0.7, top-k 50, top-p 0.95, 100 new tokens), with several seeds. A prompt's
seeds are the same at every strength, so a difference between strengths is the steering's,
not the dice's. Every answer is scored by both judges on all five dimensions
(:mod:`steerlab.evaluation.judges`); per steered dimension:

- *shift*: effect at +100% minus at -100%, on each judge, averaged over seeds per prompt, with a
  95% bootstrap interval over prompts (the prompt is the unit, not the answer);
- *rho*: Spearman's correlation of effect with strength over every answer; its p-value takes
  the prompt as the unit (each prompt's own rank correlation, their mean under sign flips);
- *cross-talk*: the shift it causes on every other dimension's effect (primary judge);
- *fluency*: the steered model's held-out perplexity at +-100% over unsteered, and the answers'
  repeated-4-gram rate at +-100% over unsteered answers', with a bootstrap interval over prompts.

A dimension *passes* when rho > 0 with p < 0.01, its primary shift is at least ``MIN_SHIFT`` with
the second judge agreeing in sign, its own shift is at least twice its largest cross-talk, and
both fluency ratios stay within bounds (perplexity: the extraction's bound; repetition: 1.5x).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..evaluation.fluency import steered_perplexity
from ..evaluation.judges import JUDGES, PRIMARY_JUDGE, SECOND_JUDGE, Judges, protocol_prompts
from ..evaluation.stats import Estimate, bootstrap_mean, bootstrap_statistic, clustered_spearman
from ..steering import (
    BUILTIN_DIMENSIONS,
    ExtractionConfig,
    LoadedModel,
    VectorSet,
    builtin_dataset,
    orthogonalised,
)
from ..steering.apply import prepare_vector_sets
from ..steering.batching import fold_strengths
from ..steering.cache import extract_cached
from ..steering.chat import encode_prompt
from ..steering.config import PAPER_SAMPLING
from ..steering.engine import GenerationRequest
from ..steering.generation import run_to_completion
from ..steering.wordstats import repeated_ngram_rate

STRENGTHS = (-100.0, -50.0, 0.0, 50.0, 100.0)
MAX_NEW_TOKENS = 100
MIN_SHIFT = 0.05  # primary judge, +100% vs -100% (the bar)
CROSSTALK_RATIO = 2.0  # own shift over the largest shift caused on another dimension
REPETITION_BOUND = 1.5  # repeated-4-gram rate at +-100% over unsteered
MAX_P_VALUE = 0.01
CHUNK = 256  # requests per engine run: the progress bar moves, the batch stays full


@dataclass(frozen=True)
class Answer:
    prompt: int  # index into the split's prompts
    seed: int
    steered: str  # the dimension steered, "" for unsteered
    strength: float
    text: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # judge -> dimension -> effect


@dataclass(frozen=True)
class SliderResult:
    dimension: str
    shift: dict[str, Estimate]  # per judge
    rank: tuple[float, float]  # rho, one-sided p (primary judge)
    crosstalk: dict[str, float]  # measured dimension -> mean shift (primary judge), own included
    perplexity_ratio: float  # held-out, worse of +-100%, over unsteered
    perplexity_bound: float
    repetition: dict[float, float]  # strength -> mean repeated-4-gram rate
    repetition_ratio: Estimate  # worse of +-100% over unsteered, bootstrapped over prompts
    effects: dict[str, dict[float, float]]  # judge -> strength -> mean effect on own dimension

    @property
    def largest_crosstalk(self) -> tuple[str, float]:
        others = {name: shift for name, shift in self.crosstalk.items() if name != self.dimension}
        name = max(others, key=lambda other: abs(others[other]))
        return name, others[name]

    def checks(self) -> dict[str, bool]:
        primary, second = self.shift[PRIMARY_JUDGE], self.shift[SECOND_JUDGE]
        return {
            "rises": self.rank[0] > 0 and self.rank[1] < MAX_P_VALUE,
            "shift": primary.mean >= MIN_SHIFT,
            "judges agree": second.mean > 0,
            "own over cross-talk": primary.mean >= CROSSTALK_RATIO * abs(self.largest_crosstalk[1]),
            "perplexity": self.perplexity_ratio <= self.perplexity_bound,
            "repetition": self.repetition_ratio.mean <= REPETITION_BOUND,
        }


def slider_vector_sets(
    lm: LoadedModel, config: ExtractionConfig, dimensions: Sequence[str], *, orthogonal: bool = False
) -> dict[str, VectorSet]:
    """Each built-in dimension's vector set on ``lm`` (extracted once, then cached on disk),
    made mutually orthogonal per layer if asked."""
    sets = [extract_cached(lm, builtin_dataset(name), config) for name in dimensions]
    return {vs.name: vs for vs in (orthogonalised(sets) if orthogonal else sets)}


def generate_answers(
    lm: LoadedModel,
    vector_sets: dict[str, VectorSet],
    prompts: Sequence[str],
    *,
    seeds: int,
    strengths: Sequence[float] = STRENGTHS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: bool = True,
) -> list[Answer]:
    """Every prompt and seed unsteered once, and with each dimension alone at each non-zero
    strength; seed ``k`` of prompt ``p`` is the same at every strength."""
    plan = [(p, k, "", 0.0) for p in range(len(prompts)) for k in range(seeds)]
    plan += [
        (p, k, name, strength)
        for name in vector_sets
        for strength in strengths
        if strength != 0
        for p in range(len(prompts))
        for k in range(seeds)
    ]
    prepared = prepare_vector_sets(lm, list(vector_sets.values()))
    encoded = [encode_prompt(lm.tokenizer, prompt) for prompt in prompts]
    requests = [
        GenerationRequest(
            prompt=encoded[p],
            steering=fold_strengths(prepared, {name: strength} if name else None),
            sampling=replace(PAPER_SAMPLING, seed=1000 * p + k),
            max_new_tokens=max_new_tokens,
        )
        for p, k, name, strength in plan
    ]
    texts: list[str] = []
    with tqdm(total=len(requests), desc="answers", unit="answer", disable=not progress) as bar:
        for start in range(0, len(requests), CHUNK):
            texts += run_to_completion(lm, requests[start : start + CHUNK])
            bar.update(min(CHUNK, len(requests) - start))
    return [Answer(p, k, name, s, text.strip()) for (p, k, name, s), text in zip(plan, texts, strict=True)]


def summarise(
    answers: Sequence[Answer],
    scores: dict[str, dict[str, list[float]]],
    vector_sets: dict[str, VectorSet],
    perplexity_ratios: dict[str, float],
    *,
    seed: int = 0,
) -> list[SliderResult]:
    """Per steered dimension, the figures of the module docstring."""
    results = []
    unsteered = [i for i, a in enumerate(answers) if not a.steered]
    repetition = [repeated_ngram_rate(a.text) for a in answers]
    for name, vector_set in vector_sets.items():
        mine = unsteered + [i for i, a in enumerate(answers) if a.steered == name]
        strengths = sorted({answers[i].strength for i in mine})
        shift = {
            judge: bootstrap_mean(_prompt_shifts(answers, mine, scores[judge][name]), seed=seed)
            for judge in JUDGES
        }
        crosstalk = {
            measured: float(np.mean(_prompt_shifts(answers, mine, scores[PRIMARY_JUDGE][measured])))
            for measured in scores[PRIMARY_JUDGE]
        }
        rank = clustered_spearman(
            [answers[i].strength for i in mine],
            [scores[PRIMARY_JUDGE][name][i] for i in mine],
            [answers[i].prompt for i in mine],
            seed=seed,
        )
        by_strength = {s: [i for i in mine if answers[i].strength == s] for s in strengths}
        results.append(
            SliderResult(
                dimension=name,
                shift=shift,
                rank=(rank.rho, rank.p_value),
                crosstalk=crosstalk,
                perplexity_ratio=perplexity_ratios[name],
                perplexity_bound=float(vector_set.parameters.get("perplexity_bound", 1.5)),
                repetition={
                    s: float(np.mean([repetition[i] for i in rows])) for s, rows in by_strength.items()
                },
                repetition_ratio=_repetition_ratio(answers, mine, repetition, seed=seed),
                effects={
                    judge: {
                        s: float(np.mean([scores[judge][name][i] for i in rows]))
                        for s, rows in by_strength.items()
                    }
                    for judge in JUDGES
                },
            )
        )
    return results


def _prompt_means(
    answers: Sequence[Answer], rows: Sequence[int], values: Sequence[float], strengths: Sequence[str]
) -> np.ndarray:
    """[prompts, strengths]: each prompt's mean value over its seeds at each of ``strengths``,
    named ``"unsteered"``, ``"lowest"`` or ``"highest"`` (-100% and +100% in a full run)."""
    named = {
        "unsteered": 0.0,
        "lowest": min(answers[i].strength for i in rows),
        "highest": max(answers[i].strength for i in rows),
    }
    prompts = sorted({answers[i].prompt for i in rows})
    return np.array(
        [
            [
                np.mean(
                    [
                        values[i]
                        for i in rows
                        if answers[i].prompt == prompt and answers[i].strength == named[s]
                    ]
                )
                for s in strengths
            ]
            for prompt in prompts
        ]
    )


def _prompt_shifts(answers: Sequence[Answer], rows: Sequence[int], effects: Sequence[float]) -> list[float]:
    """Per prompt: mean effect over seeds at +100% minus at -100%."""
    means = _prompt_means(answers, rows, effects, ("lowest", "highest"))
    return [float(high - low) for low, high in means]


def _repetition_ratio(
    answers: Sequence[Answer], rows: Sequence[int], rates: Sequence[float], *, seed: int
) -> Estimate:
    """The worse of the +-100% answers' mean repeated-4-gram rate over the unsteered answers',
    with an interval that resamples prompts (a few looping answers decide it, so it is noisy)."""
    table = _prompt_means(answers, rows, rates, ("unsteered", "lowest", "highest"))

    def worse_over_unsteered(means: np.ndarray) -> np.ndarray:
        worse = np.maximum(means[..., 1], means[..., 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(worse == 0, 1.0, worse / means[..., 0])

    return bootstrap_statistic(table, worse_over_unsteered, seed=seed)


def heldout_perplexity_ratios(lm: LoadedModel, vector_sets: dict[str, VectorSet]) -> dict[str, float]:
    """Per dimension, the steered model's held-out perplexity at the worse of +-100% over unsteered."""
    ratios = {}
    for name, vector_set in vector_sets.items():
        low, zero, high = steered_perplexity(
            lm, vector_set, [vector_set.alpha(-100), 0.0, vector_set.alpha(100)]
        )
        ratios[name] = max(low, high) / zero
    return ratios


def run_sliders(
    lm: LoadedModel,
    *,
    split: str,
    config: ExtractionConfig | None = None,
    orthogonal: bool = False,
    seeds: int = 3,
    prompt_count: int | None = None,
    dimensions: Sequence[str] = BUILTIN_DIMENSIONS,
    strengths: Sequence[float] = STRENGTHS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: bool = True,
) -> tuple[list[SliderResult], list[Answer], dict[str, Any]]:
    """The whole protocol on ``lm`` with vectors extracted by ``config`` (default: the core's
    defaults): results, every answer, and the run's settings."""
    config = config or ExtractionConfig()
    if not {-100.0, 0.0, 100.0} <= set(strengths):
        raise ValueError("strengths must include -100, 0 and 100 (the shift and fluency are read there)")
    prompts = protocol_prompts(split)[:prompt_count]
    vector_sets = slider_vector_sets(lm, config, dimensions, orthogonal=orthogonal)
    answers = generate_answers(
        lm,
        vector_sets,
        prompts,
        seeds=seeds,
        strengths=strengths,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    judges = Judges()
    scores = judges.score([a.text for a in answers])
    answers = [
        replace(
            answer,
            scores={judge: {name: by_name[name][i] for name in by_name} for judge, by_name in scores.items()},
        )
        for i, answer in enumerate(answers)
    ]
    results = summarise(answers, scores, vector_sets, heldout_perplexity_ratios(lm, vector_sets))
    settings = {
        "model": lm.name,
        "split": split,
        "method": config.method,
        "extraction": asdict(config),
        "orthogonal": orthogonal,
        "prompts": len(prompts),
        "seeds": seeds,
        "strengths": list(strengths),
        "max_new_tokens": max_new_tokens,
        "sampling": asdict(PAPER_SAMPLING),
        "alpha_max": {name: vs.alpha_max for name, vs in vector_sets.items()},
        "range_limited_by": {
            name: vs.functional_range.get("limited_by", "perplexity") for name, vs in vector_sets.items()
        },
    }
    return results, answers, settings


def format_report(results: Sequence[SliderResult], settings: dict[str, Any]) -> str:
    """A Markdown report: one row per slider, then the cross-talk matrix."""
    lines = [
        f"Sliders on {settings['model']}, {settings['split']} prompts ({settings['prompts']}), "
        f"{settings['seeds']} seeds, {settings['method']} vectors"
        f"{' (orthogonalised)' if settings['orthogonal'] else ''}, sampled (T 0.7, top-k 50, top-p 0.95, "
        f"{settings['max_new_tokens']} tokens). Shifts: +100% minus -100%, 95% bootstrap over prompts.",
        "",
        f"| dimension | shift ({PRIMARY_JUDGE}) | shift ({SECOND_JUDGE}) | rho (p) | largest cross-talk "
        "| held-out ppl x | repeat-4 x [95%] | alpha_max (limited by) | passes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    alpha_max, limited_by = settings["alpha_max"], settings["range_limited_by"]
    for result in results:
        other, cross = result.largest_crosstalk
        checks = result.checks()
        failed = [name for name, ok in checks.items() if not ok]
        lines.append(
            f"| {result.dimension} | {result.shift[PRIMARY_JUDGE]} | {result.shift[SECOND_JUDGE]} "
            f"| {result.rank[0]:+.2f} ({result.rank[1]:.2g}) | {cross:+.3f} ({other}) "
            f"| {result.perplexity_ratio:.2f} (bound {result.perplexity_bound:g}) "
            f"| {_ratio(result.repetition_ratio)} "
            f"| {alpha_max[result.dimension]:.3g} ({limited_by[result.dimension]}) "
            f"| {'yes' if not failed else 'no: ' + ', '.join(failed)} |"
        )
    measured = list(results[0].crosstalk) if results else []
    lines += [
        "",
        f"Cross-talk ({PRIMARY_JUDGE} shift; row = steered, column = measured):",
        "",
        "| steered \\ measured | " + " | ".join(measured) + " |",
        "|---|" + "---|" * len(measured),
    ]
    lines += [
        f"| {r.dimension} | " + " | ".join(f"{r.crosstalk[m]:+.3f}" for m in measured) + " |" for r in results
    ]
    return "\n".join(lines)


def _ratio(estimate: Estimate) -> str:
    return f"{estimate.mean:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"


def write_results(
    path: Path, results: Sequence[SliderResult], answers: Sequence[Answer], settings: dict[str, Any]
) -> None:
    """Every figure and answer as JSON."""
    data = {
        "settings": settings,
        "results": [
            {
                "dimension": r.dimension,
                "shift": {judge: asdict(estimate) for judge, estimate in r.shift.items()},
                "rho": r.rank[0],
                "p_value": r.rank[1],
                "crosstalk": r.crosstalk,
                "perplexity_ratio": r.perplexity_ratio,
                "perplexity_bound": r.perplexity_bound,
                "repetition": {str(s): v for s, v in r.repetition.items()},
                "repetition_ratio": asdict(r.repetition_ratio),
                "effects": {judge: {str(s): v for s, v in row.items()} for judge, row in r.effects.items()},
                "checks": r.checks(),
            }
            for r in results
        ],
        "answers": [asdict(a) for a in answers],
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
