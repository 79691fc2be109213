"""Find the parts of a Hugging Face causal LM that steering reads and writes.

Steering needs the list of decoder layers and, in each, the pre-attention norm whose output
is the default activation site. Known architectures are listed explicitly; any other model
whose layers sit at a conventional path with a conventional norm name works too.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedModelError

# Attribute paths (from the top-level CausalLM module) where decoder layers live.
_LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers")
# Attribute names of the pre-attention norm inside a decoder layer.
_NORM_NAMES = ("input_layernorm", "ln_1", "attention_norm")

# model_type -> (layers path, norm attribute), for the architectures we test explicitly.
KNOWN_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("model.layers", "input_layernorm"),
    "mistral": ("model.layers", "input_layernorm"),
    "mixtral": ("model.layers", "input_layernorm"),
    "qwen2": ("model.layers", "input_layernorm"),
    "qwen3": ("model.layers", "input_layernorm"),
    "gemma": ("model.layers", "input_layernorm"),
    "gemma2": ("model.layers", "input_layernorm"),
    "gemma3_text": ("model.layers", "input_layernorm"),
    "gemma3": ("model.language_model.layers", "input_layernorm"),
    "stablelm": ("model.layers", "input_layernorm"),
    "phi3": ("model.layers", "input_layernorm"),
}


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where the decoder layers and their pre-attention norms are, and the model's sizes."""

    model_type: str
    layers: tuple[nn.Module, ...]
    norms: tuple[nn.Module, ...]
    hidden_size: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _get_path(root: nn.Module, path: str) -> object | None:
    node: object = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _find_layers(model: nn.Module, model_type: str) -> tuple[nn.Module, ...]:
    known = KNOWN_ARCHITECTURES.get(model_type)
    paths = (known[0],) if known else _LAYER_PATHS
    for path in paths:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return tuple(layers)
    raise UnsupportedModelError(
        f"model type {model_type!r} is not supported: no decoder layer list found at "
        f"{' or '.join(paths)}. Supported: {', '.join(sorted(KNOWN_ARCHITECTURES))}"
    )


def _find_norm(layer: nn.Module, model_type: str) -> nn.Module:
    known = KNOWN_ARCHITECTURES.get(model_type)
    names = (known[1],) if known else _NORM_NAMES
    for name in names:
        norm = getattr(layer, name, None)
        if isinstance(norm, nn.Module):
            return norm
    raise UnsupportedModelError(
        f"model type {model_type!r} is not supported: its decoder layer "
        f"{type(layer).__name__} has no pre-attention norm named {' or '.join(names)}"
    )


def _hidden_size(model: nn.Module, model_type: str) -> int:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if config is not None else None
    size = getattr(text_config, "hidden_size", None)
    if not isinstance(size, int):
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported: its config has no hidden_size"
        )
    return size


def adapt(model: nn.Module) -> ArchitectureAdapter:
    """Locate decoder layers, pre-attention norms and the hidden size of ``model``.

    Raises :class:`UnsupportedModelError` naming what is missing.
    """
    model_type = str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))
    layers = _find_layers(model, model_type)
    norms = tuple(_find_norm(layer, model_type) for layer in layers)
    return ArchitectureAdapter(
        model_type=model_type,
        layers=layers,
        norms=norms,
        hidden_size=_hidden_size(model, model_type),
    )
