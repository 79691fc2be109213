"""Shared fixtures: the real SmolLM2 tokenizer and model, and tiny random models per architecture."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from steerlab.sessions.learn.encoder import learn_cache
from steerlab.steering import LoadedModel, builtin_dataset, load_model, parse_dataset, wrap_model
from steerlab.steering.datasets import ContrastiveDataset
from steerlab.steering.models import builtin_model_dir

# Every process the tests start (each with a home of its own) shares LEARN's tuned encoder, which
# takes minutes to train: it is trained once, by whichever process needs it first.
os.environ.setdefault("STEERLAB_LEARN_CACHE", str(learn_cache()))

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4}


def _tiny_config(architecture: str, vocab_size: int) -> Any:
    import transformers as tf

    common: dict[str, Any] = {**TINY, "vocab_size": vocab_size, "num_key_value_heads": 2}
    configs: dict[str, Callable[[], Any]] = {
        "llama": lambda: tf.LlamaConfig(**common),
        "mistral": lambda: tf.MistralConfig(**common),
        "mixtral": lambda: tf.MixtralConfig(**common, num_local_experts=2, num_experts_per_tok=1),
        "qwen2": lambda: tf.Qwen2Config(**common),
        "qwen3": lambda: tf.Qwen3Config(**common, head_dim=16),
        "gemma": lambda: tf.GemmaConfig(**common, head_dim=16),
        "gemma2": lambda: tf.Gemma2Config(**common, head_dim=16),
        "gemma3": lambda: tf.Gemma3TextConfig(**common, head_dim=16),
        "stablelm": lambda: tf.StableLmConfig(**common),
        "phi3": lambda: tf.Phi3Config(**common),
    }
    return configs[architecture]()


ARCHITECTURES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "stablelm",
    "phi3",
)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2 directory (converts the GGUF once, then cached)."""
    return builtin_model_dir("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


def make_tiny_model(architecture: str, tokenizer: Any, seed: int = 0) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _tiny_config(architecture, len(tokenizer))
    # A wider init than the default spreads the logits, so greedy choices are not near-ties.
    config.initializer_range = 0.2
    model = AutoModelForCausalLM.from_config(config)
    return wrap_model(model, tokenizer, f"tiny-{architecture}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A small random Llama saved as a Hugging Face directory, for child processes to load."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        initializer_range=0.2,
    )
    directory = tmp_path_factory.mktemp("tiny-llama")
    tf.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_models(tokenizer: Any) -> dict[str, LoadedModel]:
    return {arch: make_tiny_model(arch, tokenizer) for arch in ARCHITECTURES}


def small_dataset(per_pole: int = 12) -> ContrastiveDataset:
    """The first ``per_pole`` prompt pairs of the built-in cost dataset."""
    full = builtin_dataset("cost")
    dimension = full.dimension
    kept = {"budget": 0, "luxury": 0}
    examples = []
    for example in full.examples:
        if kept[example.label] < per_pole:
            kept[example.label] += 1
            examples.append(example)
    return ContrastiveDataset(dimension, tuple(examples))


@pytest.fixture(scope="session")
def tiny_dataset() -> ContrastiveDataset:
    return small_dataset()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path) -> LoadedModel:
    return load_model("smollm2-135m")


def dataset_lines(header: dict[str, Any], examples: list[dict[str, Any]]) -> list[str]:
    import json

    return [json.dumps(header)] + [json.dumps(e) for e in examples]


def parse(header: dict[str, Any], examples: list[dict[str, Any]]) -> ContrastiveDataset:
    return parse_dataset(dataset_lines(header, examples), "test.jsonl")


PLATFORM_TOKEN = "test-token-7c1e"


@pytest.fixture(scope="session")
def steerlab_up(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Any]:
    """`steerlab up` on the small random Llama, with a token, shared by the SDK and chat tests."""
    from service_support import PlatformProcess

    root = tmp_path_factory.mktemp("platform")
    platform = PlatformProcess(str(tiny_model_dir), root / "data", root / "home", token=PLATFORM_TOKEN)
    yield platform
    assert platform.stop() == 0
