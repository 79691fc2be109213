"""Vector set files round-trip, and every kind of damage or mismatch is caught on load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import save_file

from steerlab.steering import (
    ExtractionConfig,
    LoadedModel,
    SteeringError,
    VectorSet,
    VectorSetError,
    VectorSetMismatchError,
    extract,
    orthogonalised,
    plan_rows,
    steer,
)
from steerlab.steering.datasets import ContrastiveDataset


@pytest.fixture(scope="module")
def vector_set(tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset) -> VectorSet:
    return extract(tiny_models["llama"], tiny_dataset, ExtractionConfig(top_k=2))


def test_round_trip_keeps_everything(vector_set: VectorSet, tmp_path: Path) -> None:
    path = vector_set.save(tmp_path / "cost.safetensors")
    loaded = VectorSet.load(path)
    assert torch.equal(loaded.directions, vector_set.directions)
    assert loaded.metadata() == vector_set.metadata()
    metadata = loaded.metadata()
    for key in (
        "selected_layers",
        "layer_scores",
        "alpha_max",
        "method",
        "parameters",
        "dataset_hash",
        "model",
        "library_version",
        "created_at",
        "functional_range",
        "model_name",
    ):
        assert metadata[key] not in (None, "", [], {}), key


def test_bytes_round_trip_matches_the_file(vector_set: VectorSet, tmp_path: Path) -> None:
    data = vector_set.to_bytes()
    assert vector_set.save(tmp_path / "cost.safetensors").read_bytes() == data
    loaded = VectorSet.from_bytes(data)
    assert torch.equal(loaded.directions, vector_set.directions)
    assert loaded.metadata() == vector_set.metadata()
    with pytest.raises(VectorSetError, match="upload is not a safetensors file"):
        VectorSet.from_bytes(data[:-5], source="upload")


def _rewrite(path: Path, directions: torch.Tensor, metadata: dict[str, object]) -> None:
    save_file({"directions": directions}, str(path), metadata={"steerlab": json.dumps(metadata)})


def test_modified_vectors_fail_the_checksum(vector_set: VectorSet, tmp_path: Path) -> None:
    path = tmp_path / "tampered.safetensors"
    directions = vector_set.directions.clone()
    directions[0] = -directions[0]
    _rewrite(path, directions, vector_set.metadata())
    with pytest.raises(VectorSetError, match="checksum mismatch"):
        VectorSet.load(path)


def test_nan_and_wrong_hidden_size_are_refused(vector_set: VectorSet) -> None:
    with_nan = vector_set.directions.clone()
    with_nan[1, 3] = float("nan")
    with pytest.raises(VectorSetError, match="NaN or infinite"):
        dataclasses.replace(vector_set, directions=with_nan)
    narrow = vector_set.directions[:, :32]
    with pytest.raises(VectorSetError, match="hidden size 64"):
        dataclasses.replace(vector_set, directions=narrow / narrow.norm(dim=-1, keepdim=True))
    with pytest.raises(VectorSetError, match="alpha_max"):
        dataclasses.replace(vector_set, alpha_max=float("inf"))
    with pytest.raises(VectorSetError, match="selected layers"):
        dataclasses.replace(vector_set, selected_layers=(1, 1))


def test_not_a_vector_set(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"definitely not safetensors")
    with pytest.raises(VectorSetError, match="not a safetensors file"):
        VectorSet.load(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"weights": torch.zeros(2)}, str(plain))
    with pytest.raises(VectorSetError, match="not a SteerLab vector set"):
        VectorSet.load(plain)
    with pytest.raises(VectorSetError, match="not found"):
        VectorSet.load(tmp_path / "missing.safetensors")


def test_vector_set_from_another_model_is_refused(vector_set: VectorSet, tokenizer: object) -> None:
    same_shape_other_weights = make_tiny_model("llama", tokenizer, seed=1)
    with pytest.raises(VectorSetMismatchError, match="weights_digest"):
        plan_rows([vector_set], [{"cost": 50}], lm=same_shape_other_weights)
    other_architecture = make_tiny_model("qwen2", tokenizer)
    with pytest.raises(VectorSetMismatchError, match="architecture llama != qwen2"):
        vector_set.check_model(other_architecture.fingerprint)


def test_strengths_are_validated_not_clamped(
    tiny_models: dict[str, LoadedModel], vector_set: VectorSet
) -> None:
    lm = tiny_models["llama"]
    for bad, message in [
        ({"cost": 100.5}, "outside -100..100"),
        ({"cost": float("nan")}, "finite number"),
        ({"price": 10}, "unknown dimension 'price'; available: cost"),
    ]:
        with pytest.raises(SteeringError, match=message):
            plan_rows([vector_set], [bad], lm=lm)
    with pytest.raises(SteeringError, match="two vector sets"):
        plan_rows([vector_set, vector_set], [None], lm=lm)


def test_planned_rows_must_match_the_batch(
    tiny_models: dict[str, LoadedModel], vector_set: VectorSet
) -> None:
    lm = tiny_models["llama"]
    ids = lm.tokenizer(["hello", "hello", "hello"], return_tensors="pt")["input_ids"]
    with (
        pytest.raises(SteeringError, match="planned for 2 rows"),
        steer(lm, [vector_set], [{"cost": 10}, None]),
        torch.no_grad(),
    ):
        lm.model(input_ids=ids)


def test_several_dimensions_fold_into_one_weighted_delta_per_layer(
    tiny_models: dict[str, LoadedModel], vector_set: VectorSet
) -> None:
    from steerlab.steering import Dimension

    lm = tiny_models["llama"]
    age = dataclasses.replace(
        vector_set,
        dimension=Dimension("age", "kids", "adults"),
        directions=vector_set.directions.roll(1, dims=-1),
        selected_layers=tuple(range(lm.num_layers)),
        alpha_max=2 * vector_set.alpha_max,
    )
    plan = plan_rows([vector_set, age], [{"cost": 50, "age": -25}, {"age": 100}, None], lm=lm)["norm"]
    assert set(plan) == set(age.selected_layers)
    for layer, layer_delta in plan.items():
        expected = -0.25 * age.alpha_max * age.directions[layer]
        if layer in vector_set.selected_layers:
            expected = expected + 0.5 * vector_set.alpha_max * vector_set.directions[layer]
        assert torch.allclose(layer_delta.delta[0], expected, atol=1e-6)
        assert torch.allclose(layer_delta.delta[1], age.alpha_max * age.directions[layer], atol=1e-6)
        assert layer_delta.steered.tolist() == [True, True, False]
        assert not layer_delta.delta[2].any()


def test_orthogonalised_sets_share_no_component_and_stay_close_to_their_own(vector_set: VectorSet) -> None:
    torch.manual_seed(1)
    own = vector_set.directions
    shared = torch.randn_like(own)
    mixed = own + 0.8 * shared / shared.norm(dim=-1, keepdim=True)
    other = dataclasses.replace(
        vector_set,
        dimension=dataclasses.replace(vector_set.dimension, name="other"),
        directions=mixed / mixed.norm(dim=-1, keepdim=True),
    )
    first, second = orthogonalised([vector_set, other])
    assert (first.directions * second.directions).sum(-1).abs().max() < 1e-5
    assert torch.allclose(first.directions.norm(dim=-1), torch.ones(own.shape[0]), atol=1e-5)
    before = (vector_set.directions * other.directions).sum(-1)
    assert before.min() > 0.3  # they did share a component
    # Each moved as little as the other (not one kept and the other bent, as Gram-Schmidt does).
    moved_first = (first.directions * own).sum(-1)
    moved_second = (second.directions * other.directions).sum(-1)
    assert moved_first.min() > 0.8 and torch.allclose(moved_first, moved_second, atol=1e-4)
    assert first.parameters["orthogonalised_against"] == [other.name]
    with pytest.raises(VectorSetError, match="parallel"):
        orthogonalised([vector_set, vector_set])
