"""Extraction and per-row steering on a tiny random model of every supported architecture."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import ARCHITECTURES

from steerlab.steering import (
    ExtractionConfig,
    LoadedModel,
    UnsupportedModelError,
    VectorSet,
    extract,
    generate,
    steer,
    wrap_model,
)
from steerlab.steering.datasets import ContrastiveDataset
from steerlab.steering.sites import hooked

PROMPT = "Plan a birthday dinner for my sister."


@pytest.fixture(scope="module")
def vector_sets(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> dict[str, VectorSet]:
    config = ExtractionConfig(top_k=2)
    return {arch: extract(lm, tiny_dataset, config) for arch, lm in tiny_models.items()}


def _batch(lm: LoadedModel, rows: int) -> dict[str, torch.Tensor]:
    encoded = lm.tokenizer([PROMPT] * rows, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _site_outputs(lm: LoadedModel, site: str, batch: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Activations at ``site`` as the model sees them (after any steering hook added earlier)."""
    seen: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Any:
        return lambda activation: seen.__setitem__(layer, activation.detach().clone())

    with hooked(lm.adapter, site, {layer: keep(layer) for layer in range(lm.num_layers)}):
        lm.model(**batch)
    return seen


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_extraction_shapes(
    arch: str, tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm, vector_set = tiny_models[arch], vector_sets[arch]
    assert vector_set.directions.shape == (lm.num_layers, lm.hidden_size) == (4, 64)
    assert torch.allclose(vector_set.directions.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert len(vector_set.selected_layers) == 2
    assert len(vector_set.layer_scores) == 4
    assert vector_set.alpha_max > 0
    assert vector_set.model == lm.fingerprint


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zero_strength_leaves_logits_bit_identical(
    arch: str, tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm = tiny_models[arch]
    batch = _batch(lm, 3)
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with steer(lm, [vector_sets[arch]], [{"cost": 0}, None, {}]):
            steered = lm.model(**batch).logits
    assert torch.equal(plain, steered)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_steering_preserves_token_norms_and_changes_direction(
    arch: str, tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm, vector_set = tiny_models[arch], vector_sets[arch]
    batch = _batch(lm, 2)
    with torch.no_grad():
        plain = _site_outputs(lm, "norm", batch)
        with steer(lm, [vector_set], [{"cost": 100}, None]):
            steered = _site_outputs(lm, "norm", batch)
    first = min(vector_set.selected_layers)
    before, after = plain[first], steered[first]
    assert torch.allclose(after.norm(dim=-1), before.norm(dim=-1), rtol=1e-4)
    assert not torch.allclose(after[0], before[0])
    assert torch.equal(after[1], before[1]), "the unsteered row must not move"
    direction = vector_set.directions[first]
    assert float((after[0] @ direction).mean()) > float((before[0] @ direction).mean())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_row_gets_only_its_own_steering_through_generate(
    arch: str, tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm, sets = tiny_models[arch], [vector_sets[arch]]
    rows = [{"cost": 100}, None, {"cost": -70}]
    batched = generate(lm, [PROMPT] * 3, vector_sets=sets, strengths=rows, max_new_tokens=12)
    alone = [generate(lm, [PROMPT], vector_sets=sets, strengths=[row], max_new_tokens=12)[0] for row in rows]
    plain = generate(lm, [PROMPT], max_new_tokens=12)[0]
    assert batched == alone
    assert batched[1] == plain
    assert batched[0] != plain and batched[2] != plain, "full-strength steering should change the text"


def test_rows_with_different_prompt_lengths_match_their_solo_runs(
    tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm, sets = tiny_models["llama"], [vector_sets["llama"]]
    prompts = [PROMPT, "Gift ideas?", "Where can we go hiking near Denver with a picnic lunch?"]
    rows = [{"cost": 100}, {"cost": -100}, None]
    batched = generate(lm, prompts, vector_sets=sets, strengths=rows, max_new_tokens=10)
    alone = [
        generate(lm, [prompt], vector_sets=sets, strengths=[row], max_new_tokens=10)[0]
        for prompt, row in zip(prompts, rows, strict=True)
    ]
    assert batched == alone


def test_steering_ends_even_when_the_forward_raises(
    tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    """The hooks stay installed (once per model, never per forward) but steer nothing after."""
    lm = tiny_models["llama"]
    batch = _batch(lm, 1)
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with pytest.raises(IndexError), steer(lm, [vector_sets["llama"]], [{"cost": 100}]):
            lm.model(input_ids=torch.tensor([[10**9]]))  # index out of range inside the model
        hooks = [len(norm._forward_hooks) for norm in lm.adapter.norms]
        after = lm.model(**batch).logits
        with steer(lm, [vector_sets["llama"]], [{"cost": 100}]):
            steered = lm.model(**batch).logits
    assert torch.equal(plain, after) and not torch.equal(plain, steered)
    assert lm.steering_hooks.plan == {}
    assert [len(norm._forward_hooks) for norm in lm.adapter.norms] == hooks  # none added per use


def test_a_steer_block_may_nest_in_another(
    tiny_models: dict[str, LoadedModel], vector_sets: dict[str, VectorSet]
) -> None:
    lm, cost = tiny_models["llama"], vector_sets["llama"]
    batch = _batch(lm, 1)
    with torch.no_grad():
        with steer(lm, [cost], [{"cost": 100}]):
            up = lm.model(**batch).logits
        with steer(lm, [cost], [{"cost": -100}]):
            down = lm.model(**batch).logits
        with steer(lm, [cost], [{"cost": 100}]):
            with steer(lm, [cost], [{"cost": -100}]):
                inner = lm.model(**batch).logits
            outer = lm.model(**batch).logits
    assert torch.equal(inner, down) and torch.equal(outer, up) and not torch.equal(up, down)


def test_residual_site_extracts_and_steers(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> None:
    lm = tiny_models["qwen2"]
    vector_set = extract(lm, tiny_dataset, ExtractionConfig(site="residual", top_k=2, method="mean-diff"))
    assert vector_set.site == "residual"
    batch = _batch(lm, 2)
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with steer(lm, [vector_set], [None, {"cost": 100}]):
            steered = lm.model(**batch).logits
        after = lm.model(**batch).logits
    assert torch.equal(plain[0], steered[0])
    assert not torch.allclose(plain[1], steered[1])
    assert torch.equal(plain, after)  # the residual hooks stay installed but steer nothing now


def test_unsupported_architecture_names_what_is_missing(tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100))
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported: no decoder layer list"):
        wrap_model(model, tokenizer, "tiny-gpt2")


@pytest.mark.parametrize(
    ("method", "token_selection"),
    [("logistic", "last"), ("mean-diff", "mean"), ("pca", "first"), ("pca", "mean")],
)
def test_every_method_and_token_selection_gives_a_usable_vector_set(
    method: str, token_selection: str, tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> None:
    lm = tiny_models["llama"]
    config = ExtractionConfig(method=method, token_selection=token_selection, num_tokens=4, top_k=3)
    vector_set = extract(lm, tiny_dataset, config)
    assert (vector_set.method, vector_set.parameters["token_selection"]) == (method, token_selection)
    assert vector_set.directions.shape == (4, 64) and len(vector_set.selected_layers) == 3
    assert torch.allclose(vector_set.directions.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert all(0 <= s.heldout_accuracy <= 1 for s in vector_set.layer_scores)


def test_bad_extraction_parameters_are_refused(
    tiny_models: dict[str, LoadedModel], tiny_dataset: ContrastiveDataset
) -> None:
    from steerlab.steering import ExtractionError, SteeringError

    lm = tiny_models["llama"]
    for config, error, message in [
        (ExtractionConfig(top_k=5), ExtractionError, "top-k must be between 1 and 4"),
        (ExtractionConfig(method="svm"), ExtractionError, "unknown method 'svm'"),
        (ExtractionConfig(token_selection="all"), ExtractionError, "unknown token selection"),
        (ExtractionConfig(site="mlp"), SteeringError, "unknown activation site 'mlp'"),
        (ExtractionConfig(repetition_bound=1.0), ExtractionError, "repetition_bound must be above 1"),
    ]:
        with pytest.raises(error, match=message):
            extract(lm, tiny_dataset, config)
