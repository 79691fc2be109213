"""Estimate a vector set's functional range: the largest strength the model stays fluent at.

``alpha_max`` is the largest |alpha| at which, steered toward either pole,

1. the perplexity of held-out completions stays within ``bound`` times the unsteered
   perplexity. The search grows alpha geometrically (in units of the site's mean activation
   norm) until the bound breaks, then bisects; if even ``MAX_NORM_MULTIPLE`` times the mean norm
   stays fluent, that cap is used;
2. and, when held-out prompts are given, answers sampled to them as in the paper repeat
   themselves no more than ``repetition_bound`` times as often as unsteered answers (repeated
   word 4-grams). Perplexity alone misses a loop: a phrase said over and over is easy to
   predict. If the perplexity's alpha breaks this bound, the search bisects below it.

The estimate records which of the two (or the cap) limited the range.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .activations import EncodedExample
from .apply import apply_plan
from .batching import LayerDelta, RowSteering, SteeringPlan
from .chat import pad_token_ids
from .config import PAPER_SAMPLING
from .datasets import package_data_file
from .engine import GenerationRequest
from .generation import run_to_completion
from .models import LoadedModel
from .wordstats import repeated_ngram_rate

START_NORM_MULTIPLE = 0.125
MAX_NORM_MULTIPLE = 4.0
BISECTION_STEPS = 4
# Perplexity is compute-bound on CPU; a bounded sample of held-out text keeps the search cheap.
MAX_EXAMPLES = 24
MAX_COMPLETION_TOKENS = 48
# The repetition check samples as the paper does, answers as long as the evaluation's, one seed
# per prompt: loops depend on the prompt (a dimension that never loops on the dataset's travel
# questions may on recipes), so breadth of prompts beats seeds. The prompts are the shipped
# range prompts (data/range/prompts.json, written apart from the evaluation's) plus the
# dataset's own set-aside prompts.
REPETITION_TOKENS = 100
# Each step samples 2 x 40+ answers (about a minute on 2 cores): a quarter of the perplexity's
# range is resolution enough for a measure this noisy.
REPETITION_BISECTION_STEPS = 2
# Rates are heavy-tailed (one looping answer in 48 moves the mean by a point or more), so the
# bound applies to at least this baseline: on smollm2-135m's time set, a near-zero alpha (1/16
# of the range) already read 1.7-2.0% against 0.9% unsteered.
REPETITION_FLOOR = 0.02


@dataclass
class RangeEstimate:
    alpha_max: float
    baseline_perplexity: float
    bound: float
    capped: bool
    # alpha -> worst perplexity of the two signs
    evaluations: dict[float, float] = field(default_factory=dict)
    limited_by: str = "perplexity"  # "perplexity", "repetition" or "cap"
    repetition_bound: float | None = None  # None: repetition was not checked
    baseline_repetition: float = 0.0
    # alpha -> worst mean repeated-4-gram rate of the two signs
    repetition: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha_max": self.alpha_max,
            "baseline_perplexity": self.baseline_perplexity,
            "perplexity_bound": self.bound,
            "capped": self.capped,
            "limited_by": self.limited_by,
            "evaluations": [[alpha, ppl] for alpha, ppl in sorted(self.evaluations.items())],
            "repetition_bound": self.repetition_bound,
            "baseline_repetition": self.baseline_repetition,
            "repetition": [[alpha, rate] for alpha, rate in sorted(self.repetition.items())],
        }


def completion_nll(
    lm: LoadedModel, examples: Sequence[EncodedExample], plan: SteeringPlan, batch_size: int = 16
) -> list[tuple[float, int]]:
    """Per example: (summed negative log-likelihood, token count) of its completion tokens."""
    results: list[tuple[float, int]] = []
    with torch.no_grad(), apply_plan(lm, plan):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            input_ids, attention_mask = pad_token_ids(
                [e.ids for e in batch], lm.tokenizer.pad_token_id, "right"
            )
            logits = lm.model(
                input_ids=input_ids.to(lm.device), attention_mask=attention_mask.to(lm.device)
            ).logits.float()
            targets = torch.full_like(input_ids, -100)
            for row, example in enumerate(batch):
                targets[row, example.completion_start : len(example.ids)] = torch.tensor(
                    example.ids[example.completion_start :]
                )
            shifted = targets[:, 1:].to(logits.device)
            nll = F.cross_entropy(
                logits[:, :-1].transpose(1, 2), shifted, ignore_index=-100, reduction="none"
            ).sum(dim=1)
            counts = (shifted != -100).sum(dim=1)
            results.extend(zip(nll.tolist(), counts.tolist(), strict=True))
    return results


def completion_perplexity(
    lm: LoadedModel, examples: Sequence[EncodedExample], plan: SteeringPlan, batch_size: int = 16
) -> float:
    """Perplexity of the completion tokens of ``examples`` (pooled) with ``plan`` applied."""
    per_example = completion_nll(lm, examples, plan, batch_size)
    total_nll = sum(nll for nll, _ in per_example)
    total_tokens = sum(count for _, count in per_example)
    return math.exp(total_nll / max(total_tokens, 1))


def uniform_plan(
    lm: LoadedModel, site: str, directions: dict[int, torch.Tensor], alpha: float
) -> SteeringPlan:
    """The same delta ``alpha * direction`` on every row, at each layer of ``directions``."""
    steered = torch.ones(1, dtype=torch.bool, device=lm.device)
    return {
        site: {
            layer: LayerDelta((alpha * vector)[None].to(lm.device, lm.dtype), steered)
            for layer, vector in directions.items()
        }
    }


def estimate_alpha_max(
    lm: LoadedModel,
    examples: Sequence[EncodedExample],
    *,
    site: str,
    directions: dict[int, torch.Tensor],
    activation_norm: float,
    bound: float = 1.5,
    prompts: Sequence[Sequence[int]] = (),
    repetition_bound: float = 1.5,
    progress: bool = False,
) -> RangeEstimate:
    """Search the largest alpha whose steered perplexity stays within ``bound`` x unsteered and,
    if ``prompts`` (encoded held-out prompts) are given, whose sampled answers' repetition stays
    within ``repetition_bound`` x unsteered."""
    examples = [
        EncodedExample(e.ids[: e.completion_start + MAX_COMPLETION_TOKENS], e.completion_start)
        for e in examples[:MAX_EXAMPLES]
    ]
    bar = tqdm(desc="range", unit="alpha", disable=not progress, leave=False)
    baseline = completion_perplexity(lm, examples, {})
    estimate = RangeEstimate(0.0, baseline, bound, capped=False)

    def fluent(alpha: float) -> bool:
        worst = max(
            completion_perplexity(lm, examples, uniform_plan(lm, site, directions, sign * alpha))
            for sign in (1.0, -1.0)
        )
        estimate.evaluations[alpha] = worst
        bar.update()
        return worst <= bound * baseline

    with bar:
        estimate.alpha_max, estimate.capped = _search(fluent, activation_norm)
        estimate.limited_by = "cap" if estimate.capped else "perplexity"
        if prompts:
            _bound_repetition(lm, estimate, prompts, site, directions, repetition_bound, bar.update)
    return estimate


def _bound_repetition(
    lm: LoadedModel,
    estimate: RangeEstimate,
    prompts: Sequence[Sequence[int]],
    site: str,
    directions: dict[int, torch.Tensor],
    repetition_bound: float,
    tick: Callable[[], object],
) -> None:
    """Lower ``estimate.alpha_max`` by bisection until sampled answers repeat themselves at most
    ``repetition_bound`` x as often as unsteered ones (above a floor of noise)."""

    def rate(alpha: float) -> float:
        signs = (1.0, -1.0) if alpha else (0.0,)
        worst = max(mean_repetition(lm, prompts, site, directions, sign * alpha) for sign in signs)
        tick()
        return worst

    estimate.repetition_bound = repetition_bound
    estimate.baseline_repetition = rate(0.0)
    limit = repetition_bound * max(estimate.baseline_repetition, REPETITION_FLOOR)

    def fluent(alpha: float) -> bool:
        estimate.repetition[alpha] = rate(alpha)
        return estimate.repetition[alpha] <= limit

    if not fluent(estimate.alpha_max):
        estimate.alpha_max = _bisect(fluent, 0.0, estimate.alpha_max, REPETITION_BISECTION_STEPS)
        estimate.capped, estimate.limited_by = False, "repetition"


def mean_repetition(
    lm: LoadedModel,
    prompts: Sequence[Sequence[int]],
    site: str,
    directions: dict[int, torch.Tensor],
    alpha: float,
) -> float:
    """Mean repeated-4-gram rate of answers sampled to ``prompts`` (one each, with the same seed
    at every alpha) with ``alpha * direction`` added at each layer of ``directions``."""
    steering = _row_steering(lm, site, directions, alpha)
    requests = [
        GenerationRequest(
            prompt=prompt,
            steering=steering,
            sampling=replace(PAPER_SAMPLING, seed=1000 * index),
            max_new_tokens=REPETITION_TOKENS,
        )
        for index, prompt in enumerate(prompts)
    ]
    texts = run_to_completion(lm, requests)
    return sum(repeated_ngram_rate(text) for text in texts) / len(texts)


@functools.cache
def range_prompts() -> tuple[str, ...]:
    """The shipped prompts every extraction's repetition check samples answers to (read once:
    every extraction and every cache lookup asks)."""
    data = json.loads(package_data_file("range", "prompts.json").read_text(encoding="utf-8"))
    return tuple(item["text"] for item in data["prompts"])


def _row_steering(
    lm: LoadedModel, site: str, directions: dict[int, torch.Tensor], alpha: float
) -> RowSteering:
    """``alpha * direction`` at each layer of ``directions``, as one request's steering."""
    if alpha == 0.0:
        return RowSteering.none()
    delta = torch.zeros(lm.num_layers, lm.hidden_size, device=lm.device, dtype=lm.dtype)
    steered = torch.zeros(lm.num_layers, dtype=torch.bool, device=lm.device)
    for layer, vector in directions.items():
        delta[layer] = alpha * vector.to(lm.device, lm.dtype)
        steered[layer] = True
    return RowSteering({site: (delta, steered)}, ())


def _search(fluent: Callable[[float], bool], activation_norm: float) -> tuple[float, bool]:
    """(alpha_max, capped): grow alpha geometrically until fluency breaks, then bisect."""
    low, high = 0.0, START_NORM_MULTIPLE * activation_norm
    cap = MAX_NORM_MULTIPLE * activation_norm
    while fluent(high):
        low = high
        if high >= cap:
            return cap, True
        high = min(2 * high, cap)
    return _bisect(fluent, low, high), False


def _bisect(fluent: Callable[[float], bool], low: float, high: float, steps: int = BISECTION_STEPS) -> float:
    """The largest fluent alpha found in ``steps`` halvings between a fluent ``low`` and a broken
    ``high``."""
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if fluent(middle) else (low, middle)
    # A set whose smallest step already breaks fluency still gets a small usable range.
    return low if low > 0 else high / 2**steps
