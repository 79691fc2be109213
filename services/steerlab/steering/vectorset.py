"""Vector sets: the immutable result of one extraction, saved as one safetensors file.

The file holds one tensor, ``directions`` [num_layers, hidden] (a unit vector per layer, also
for layers not selected), and under the metadata key ``steerlab`` a JSON document with
everything needed to apply and audit it: dimension, selected layers, per-layer accuracies,
alpha_max, method and parameters, dataset hash, model fingerprint, library version, and a
SHA-256 of the direction bytes that is verified on every load.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .config import SITES
from .datasets import Dimension
from .errors import VectorSetError, VectorSetMismatchError
from .models import ModelFingerprint

FORMAT_VERSION = 1
_METADATA_KEY = "steerlab"
_UNIT_TOLERANCE = 1e-3
# alpha_max is in units of the site's activations, whose norms are well below this for every
# model SteerLab runs (the built-in sets are 0.3 to 0.5 on SmolLM2); beyond it, a set would
# only turn answers into noise or overflow, so it is refused as corrupt.
MAX_ALPHA_MAX = 1000.0


@dataclass(frozen=True)
class LayerScore:
    """How well one layer's direction separates the poles (per-example accuracy)."""

    layer: int
    heldout_accuracy: float
    train_accuracy: float


def directions_digest(directions: torch.Tensor) -> str:
    return hashlib.sha256(directions.float().contiguous().numpy().tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class VectorSet:
    """Steering directions for one dimension on one model, with their provenance."""

    dimension: Dimension
    directions: torch.Tensor  # [num_layers, hidden], float32, unit rows
    selected_layers: tuple[int, ...]
    layer_scores: tuple[LayerScore, ...]
    alpha_max: float
    site: str
    method: str
    parameters: dict[str, Any]
    dataset_hash: str
    model: ModelFingerprint
    library_version: str
    created_at: str
    functional_range: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""  # the name the model was loaded under; informative, not part of its identity

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        directions = self.directions
        if directions.ndim != 2:
            raise VectorSetError(f"directions must be 2-D [layers, hidden], got {tuple(directions.shape)}")
        layers, hidden = directions.shape
        if (layers, hidden) != (self.model.num_layers, self.model.hidden_size):
            raise VectorSetError(
                f"directions have shape {layers}x{hidden} but the model fingerprint declares "
                f"{self.model.num_layers} layers of hidden size {self.model.hidden_size}"
            )
        if not torch.isfinite(directions).all():
            raise VectorSetError("directions contain NaN or infinite values")
        norms = directions.norm(dim=-1)
        if (norms - 1).abs().max() > _UNIT_TOLERANCE:
            raise VectorSetError("every direction must be a unit vector")
        selected = self.selected_layers
        if not selected or len(set(selected)) != len(selected) or any(not 0 <= i < layers for i in selected):
            raise VectorSetError(
                f"selected layers {list(selected)} must be distinct and within 0..{layers - 1}"
            )
        if not (math.isfinite(self.alpha_max) and 0 < self.alpha_max <= MAX_ALPHA_MAX):
            raise VectorSetError(
                f"alpha_max must be above 0 and at most {MAX_ALPHA_MAX:g}, got {self.alpha_max}"
            )
        if self.site not in SITES:
            raise VectorSetError(f"unknown activation site {self.site!r}")

    @property
    def name(self) -> str:
        return self.dimension.name

    @property
    def selected_scores(self) -> list[LayerScore]:
        """The scores of the selected layers, in layer order."""
        return [score for score in self.layer_scores if score.layer in self.selected_layers]

    @property
    def heldout_accuracy(self) -> float:
        """Mean held-out per-example accuracy over the selected layers."""
        scores = self.selected_scores
        return sum(score.heldout_accuracy for score in scores) / len(scores)

    def alpha(self, percent: float) -> float:
        """Steering coefficient for a strength in percent of the functional range."""
        return percent / 100.0 * self.alpha_max

    def check_model(self, fingerprint: ModelFingerprint) -> None:
        """Raise :class:`VectorSetMismatchError` unless this set was extracted from that model."""
        differences = self.model.differences(fingerprint)
        if differences:
            raise VectorSetMismatchError(
                f"vector set {self.name!r} was extracted from a different model ("
                + "; ".join(differences)
                + ")"
            )

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "dimension": self.dimension.to_dict(),
            "selected_layers": list(self.selected_layers),
            "layer_scores": [vars(score) for score in self.layer_scores],
            "alpha_max": self.alpha_max,
            "site": self.site,
            "method": self.method,
            "parameters": self.parameters,
            "dataset_hash": self.dataset_hash,
            "model": self.model.to_dict(),
            "model_name": self.model_name,
            "library_version": self.library_version,
            "created_at": self.created_at,
            "functional_range": self.functional_range,
            "directions_sha256": directions_digest(self.directions),
        }

    def to_bytes(self) -> bytes:
        """The vector set file's contents (safetensors)."""
        data: bytes = save_tensors(
            {"directions": self.directions.float().contiguous()},
            metadata={_METADATA_KEY: json.dumps(self.metadata())},
        )
        return data

    def save(self, path: str | Path) -> Path:
        """Write the vector set to ``path`` (a ``.safetensors`` file), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(self.to_bytes())
        temporary.replace(path)
        return path

    @classmethod
    def from_parts(cls, directions: torch.Tensor, metadata: dict[str, Any]) -> VectorSet:
        """Rebuild a vector set from its tensor and metadata, verifying the checksum."""
        if metadata.get("format_version") != FORMAT_VERSION:
            raise VectorSetError(f"unsupported vector set format {metadata.get('format_version')!r}")
        if directions_digest(directions) != metadata.get("directions_sha256"):
            raise VectorSetError("checksum mismatch: the directions were modified or corrupted")
        try:
            return cls(
                dimension=Dimension.from_dict(metadata["dimension"]),
                directions=directions.float(),
                selected_layers=tuple(int(i) for i in metadata["selected_layers"]),
                layer_scores=tuple(LayerScore(**score) for score in metadata["layer_scores"]),
                alpha_max=float(metadata["alpha_max"]),
                site=str(metadata["site"]),
                method=str(metadata["method"]),
                parameters=dict(metadata["parameters"]),
                dataset_hash=str(metadata["dataset_hash"]),
                model=ModelFingerprint.from_dict(metadata["model"]),
                library_version=str(metadata["library_version"]),
                created_at=str(metadata["created_at"]),
                functional_range=dict(metadata.get("functional_range", {})),
                model_name=str(metadata.get("model_name", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VectorSetError(f"malformed vector set metadata: {exc!r}") from exc

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "vector set") -> VectorSet:
        """Read and verify a vector set file's contents; ``source`` names it in errors."""
        try:
            tensors = load_tensors(data)
            header = _safetensors_header(data)
        except (SafetensorError, ValueError) as exc:
            raise VectorSetError(f"{source} is not a safetensors file: {exc}") from exc
        raw = header.get("__metadata__", {}).get(_METADATA_KEY)
        if raw is None or "directions" not in tensors:
            raise VectorSetError(f"{source} is not a SteerLab vector set (no steerlab metadata)")
        try:
            metadata = json.loads(raw, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise VectorSetError(f"{source}: metadata is not valid JSON") from exc
        except ValueError as exc:
            raise VectorSetError(f"{source}: metadata holds {exc}, which JSON does not allow") from exc
        return cls.from_parts(tensors["directions"], metadata)

    @classmethod
    def load(cls, path: str | Path) -> VectorSet:
        """Read and verify a vector set file."""
        path = Path(path)
        if not path.is_file():
            raise VectorSetError(f"vector set file not found: {path}")
        return cls.from_bytes(path.read_bytes(), source=str(path))


def _safetensors_header(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors buffer: an 8-byte little-endian length, then the JSON."""
    if len(data) < 8:
        raise ValueError("too short")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("header length exceeds the data")
    header = json.loads(data[8 : 8 + length])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def _no_constant(name: str) -> Any:
    """Python's JSON reader accepts NaN and Infinity; a vector set's metadata must not hold them
    (other languages' readers refuse the file)."""
    raise ValueError(name)


def orthogonalised(vector_sets: Sequence[VectorSet]) -> list[VectorSet]:
    """The sets with their directions made mutually orthogonal at every layer, each as close to
    its own as the others allow (symmetric, or Löwdin, orthogonalisation: ``W <- (W W^T)^-1/2 W``).

    Directions that share a component (two probes that both learned a register, say) then
    steer only what each has of its own. ``alpha_max`` is kept; measure fluency again."""
    if len(vector_sets) < 2:
        return list(vector_sets)
    first = vector_sets[0]
    for other in vector_sets[1:]:
        other.check_model(first.model)
        if other.site != first.site:
            raise VectorSetError(
                f"{first.name} and {other.name} steer different sites; orthogonalise sets of one site"
            )
    stacked = torch.stack([vs.directions.double() for vs in vector_sets], dim=1)  # [layers, sets, hidden]
    gram = stacked @ stacked.transpose(1, 2)
    values, vectors = torch.linalg.eigh(gram)
    if values.min() < 1e-2:  # what is left of a direction that close to the others is mostly noise
        raise VectorSetError("two of the directions are (nearly) parallel; they cannot be separated")
    inverse_root = vectors @ torch.diag_embed(values.rsqrt()) @ vectors.transpose(1, 2)
    separated = (inverse_root @ stacked).float()
    separated = separated / separated.norm(dim=-1, keepdim=True)
    names = [vs.name for vs in vector_sets]
    return [
        replace(
            vs,
            directions=separated[:, index].contiguous(),
            parameters={**vs.parameters, "orthogonalised_against": [n for n in names if n != vs.name]},
        )
        for index, vs in enumerate(vector_sets)
    ]
