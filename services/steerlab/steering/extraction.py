"""Extraction: a contrastive dataset and a model in, a vector set out.

1. Encode every example (prompt through the chat template, then the completion).
2. Split prompts (paired answers stay together): a *range* split, never fitted on, for the
   functional range; the rest goes into ``folds`` cross-validation folds.
3. Read the site's activations on the completion tokens at every layer.
4. Per layer, score each example with a direction fitted on the other folds (held-out
   accuracy, per example, over the whole answer), then fit the final direction on all folds.
5. Keep the top-k layers by held-out accuracy.
6. Estimate alpha_max, the functional range: perplexity on the range split's completions,
   repetition in answers sampled to its prompts and to the shipped range prompts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import torch
from tqdm.auto import tqdm

from .. import __version__
from .activations import (
    MAX_COMPLETION_TOKENS,
    Activations,
    collect_activations,
    encode_examples,
)
from .chat import encode_prompt
from .config import ExtractionConfig
from .datasets import ContrastiveDataset
from .errors import DatasetError
from .functional_range import estimate_alpha_max, range_prompts
from .models import LoadedModel
from .probes import Direction, accuracy, example_scores, fit_direction, unit_rows
from .vectorset import LayerScore, VectorSet

# Called with (stage, fraction done in 0..1, message) as extraction proceeds.
ProgressCallback = Callable[[str, float, str], None]


def default_top_k(num_layers: int) -> int:
    """Paper: k=16 of 18-24 layers, 24 of 32, 32 of 42; about three quarters of the depth."""
    return max(1, round(0.75 * num_layers))


@dataclass(frozen=True)
class Split:
    """``fold[i]`` is example i's cross-validation fold, or -1 for the range split."""

    fold: torch.Tensor

    @property
    def range_examples(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.fold < 0).flatten()]


def split_examples(dataset: ContrastiveDataset, folds: int, range_fraction: float, seed: int) -> Split:
    """Deterministic split by prompt, so that answers to one prompt never straddle a split."""

    def rank(prompt: str) -> str:
        return hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest()

    prompts = sorted({e.prompt for e in dataset.examples}, key=rank)
    reserved = max(1, math.ceil(range_fraction * len(prompts)))
    if len(prompts) - reserved < folds:
        raise DatasetError(f"too few distinct prompts ({len(prompts)}) for {folds} folds and a range split")
    fold_of = {prompt: -1 if i < reserved else i % folds for i, prompt in enumerate(prompts)}
    split = Split(torch.tensor([fold_of[e.prompt] for e in dataset.examples]))
    labels = torch.tensor(dataset.labels())
    for fold in range(folds):
        if len(set(labels[(split.fold >= 0) & (split.fold != fold)].tolist())) < 2:
            raise DatasetError("a cross-validation fold lacks one of the poles; add more examples")
    return split


@dataclass(frozen=True)
class _LayerSamples:
    """One layer's unit-normalised samples with their example, label and fold."""

    values: torch.Tensor
    owner: torch.Tensor
    labels: torch.Tensor
    fold: torch.Tensor
    fit_sample: torch.Tensor  # among the first num_tokens: used to fit
    score_sample: torch.Tensor  # among the first score_tokens: used to score


def _fit_layer(
    layer: int, samples: _LayerSamples, config: ExtractionConfig, num_examples: int
) -> tuple[Direction, LayerScore]:
    """The layer's direction (fitted on all folds) and its cross-validated per-example accuracy."""

    def fit(mask: torch.Tensor) -> Direction:
        return fit_direction(config.method, samples.values[mask], samples.labels[mask], config.seed)

    def scores(direction: Direction, mask: torch.Tensor) -> torch.Tensor:
        return example_scores(direction, samples.values[mask], samples.owner[mask], num_examples)

    in_folds = samples.fold >= 0
    out_of_fold = torch.zeros(num_examples)
    for fold in range(config.folds):
        direction = fit(in_folds & (samples.fold != fold) & samples.fit_sample)
        held_out = (samples.fold == fold) & samples.score_sample
        out_of_fold += scores(direction, held_out)  # zero for examples outside this fold
    final = fit(in_folds & samples.fit_sample)
    in_sample = scores(final, in_folds & samples.score_sample)
    example_labels = torch.zeros(num_examples, dtype=torch.long).index_put_((samples.owner,), samples.labels)
    examples = torch.zeros(num_examples, dtype=torch.bool).index_put_(
        (samples.owner[in_folds],), torch.tensor(True)
    )
    return final, LayerScore(
        layer=layer,
        heldout_accuracy=accuracy(out_of_fold[examples], example_labels[examples]),
        train_accuracy=accuracy(in_sample[examples], example_labels[examples]),
    )


def _fit_layers(
    activations: Activations,
    labels: torch.Tensor,
    split: Split,
    config: ExtractionConfig,
    progress: bool,
) -> tuple[list[Direction], list[LayerScore]]:
    owner = activations.example_index
    directions, scores = [], []
    num_layers = activations.values.shape[0]
    for layer in tqdm(range(num_layers), desc="probes", disable=not progress, leave=False):
        samples = _LayerSamples(
            values=unit_rows(activations.values[layer]),
            owner=owner,
            labels=labels[owner],
            fold=split.fold[owner],
            fit_sample=activations.position < config.num_tokens,
            score_sample=activations.position < config.score_tokens,
        )
        direction, score = _fit_layer(layer, samples, config, len(labels))
        directions.append(direction)
        scores.append(score)
    return directions, scores


def select_layers(scores: list[LayerScore], top_k: int) -> tuple[int, ...]:
    """Top-k layers by held-out accuracy (ties: train accuracy, then depth order)."""
    ranked = sorted(scores, key=lambda s: (-s.heldout_accuracy, -s.train_accuracy, s.layer))
    return tuple(sorted(s.layer for s in ranked[:top_k]))


def extract(
    lm: LoadedModel,
    dataset: ContrastiveDataset,
    config: ExtractionConfig | None = None,
    *,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
) -> VectorSet:
    """Extract a vector set for ``dataset``'s dimension from ``lm``."""
    config = config or ExtractionConfig()
    config.validate(lm.num_layers)
    report = on_progress or (lambda stage, fraction, message: None)
    top_k = config.top_k or default_top_k(lm.num_layers)

    report("activations", 0.0, f"encoding {len(dataset.examples)} examples")
    encoded = encode_examples(lm.tokenizer, dataset.examples, MAX_COMPLETION_TOKENS)
    split = split_examples(dataset, config.folds, config.range_fraction, config.seed)
    activations = collect_activations(
        lm,
        encoded,
        site=config.site,
        token_selection=config.token_selection,
        num_tokens=max(config.num_tokens, config.score_tokens),
        batch_size=config.batch_size,
        progress=progress,
        on_batch=lambda done, total: report("activations", 0.4 * done / total, f"{done}/{total} batches"),
    )
    report("probes", 0.4, f"fitting {config.method} directions on {lm.num_layers} layers")
    labels = torch.tensor(dataset.labels())
    directions, scores = _fit_layers(activations, labels, split, config, progress)
    selected = select_layers(scores, top_k)

    report("range", 0.6, "estimating the functional range")
    mean_norm = sum(activations.mean_norm(layer) for layer in selected) / len(selected)
    check_prompts = dict.fromkeys(
        [*range_prompts(), *(dataset.examples[i].prompt for i in split.range_examples)]
    )
    estimate = estimate_alpha_max(
        lm,
        [encoded[i] for i in split.range_examples],
        site=config.site,
        directions={layer: directions[layer].vector for layer in selected},
        activation_norm=mean_norm,
        bound=config.perplexity_bound,
        prompts=[encode_prompt(lm.tokenizer, prompt) for prompt in check_prompts],
        repetition_bound=config.repetition_bound,
        progress=progress,
    )
    report("done", 1.0, f"alpha_max {estimate.alpha_max:.2f} (limited by {estimate.limited_by})")
    return VectorSet(
        dimension=dataset.dimension,
        directions=torch.stack([d.vector for d in directions]),
        selected_layers=selected,
        layer_scores=tuple(scores),
        alpha_max=estimate.alpha_max,
        site=config.site,
        method=config.method,
        parameters={**asdict(config), "top_k": top_k, "mean_activation_norm": mean_norm},
        dataset_hash=dataset.content_hash,
        model=lm.fingerprint,
        library_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        functional_range=estimate.to_dict(),
        model_name=lm.name,
    )
