"""The engine's small parts: batched sampling, incremental text, prepacked CPU linears, memory trims."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_tiny_model

from steerlab.inference import cpu
from steerlab.inference.cpu import (
    CHUNK_ROWS,
    EXACT_ROWS,
    ROW_BUCKET,
    PackedLinear,
    can_pack,
    onednn_linear,
    pack_linear_weights,
)
from steerlab.inference.service import alternating
from steerlab.steering.config import Sampling
from steerlab.steering.engine import memory
from steerlab.steering.engine.memory import MemoryTrimmer
from steerlab.steering.engine.sampler import SamplerRows, _filter, sample, uniform_noise
from steerlab.steering.engine.text import IncrementalDecoder, RowText


def rows(*params: tuple[Sampling, int]) -> SamplerRows:
    return SamplerRows.build(list(params), torch.device("cpu"))


def test_noise_is_uniform_and_depends_only_on_seed_and_step() -> None:
    seeds, steps = torch.tensor([1, 2, 1]), torch.tensor([0, 0, 0])
    noise = uniform_noise(seeds, steps, 50_000)
    assert bool(((noise > 0) & (noise < 1)).all())
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert abs(float(noise.mean()) - 0.5) < 0.01 and abs(float((noise < 0.1).float().mean()) - 0.1) < 0.01
    assert not torch.equal(noise[0], uniform_noise(seeds[:1], torch.tensor([1]), 50_000)[0])


def test_sampling_follows_each_rows_parameters() -> None:
    logits = torch.tensor([[3.0, 2.9, 0.0, -1.0]] * 3)
    params = rows(
        (Sampling(), 0),  # greedy
        (Sampling(temperature=1.0, top_k=1, seed=1), 1),  # top-k 1 is greedy too
        (Sampling(temperature=1.0, seed=1), 1),
    )
    draws = torch.stack([sample(logits, params, torch.full((3,), step)) for step in range(2000)])
    assert bool((draws[:, 0] == 0).all()) and bool((draws[:, 1] == 0).all())
    shares = torch.bincount(draws[:, 2], minlength=4).float() / len(draws)
    expected = logits[0].softmax(-1)
    assert torch.allclose(shares, expected, atol=0.03), (shares, expected)


def test_sampling_among_top_k_candidates_draws_what_the_whole_vocabulary_would() -> None:
    logits = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0)) * 3
    params = rows(
        (Sampling(temperature=0.7, top_p=0.95, top_k=50, seed=1), 1),  # the paper's
        (Sampling(temperature=1.0, top_k=7, seed=2), 2),
        (Sampling(temperature=1.3, top_p=0.5, top_k=200, seed=3), 3),
        (Sampling(), 0),  # greedy rows ride along
        (Sampling(temperature=0.7, top_p=0.95, top_k=50, seed=1), 1),
        (Sampling(temperature=0.2, top_k=1, seed=5), 5),
    )
    assert params.candidates == 200
    for step in range(50):
        steps = torch.full((6,), step)
        scaled = logits / params.temperature.clamp_min(1e-5)[:, None]
        noise = uniform_noise(params.seed, steps, logits.shape[-1])
        whole = (_filter(scaled, params.top_k, params.top_p) - torch.log(-torch.log(noise)).float()).argmax(
            -1
        )
        whole = torch.where(params.temperature > 0, whole, logits.argmax(-1))
        assert torch.equal(sample(logits, params, steps), whole)
    assert rows((Sampling(temperature=1.0, top_k=5), 0), (Sampling(temperature=1.0), 0)).candidates == 0
    assert rows((Sampling(temperature=1.0, top_k=5), 0)).concat(rows((Sampling(), 0))).candidates == 5
    selected = rows((Sampling(temperature=1.0, top_k=5), 0), (Sampling(temperature=1.0, top_k=9), 0))
    assert selected.select(torch.tensor([0])).candidates == 5


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = rows((Sampling(temperature=1.0, top_p=0.7, seed=3), 3))
    draws = {int(sample(logits, params, torch.tensor([step]))[0]) for step in range(500)}
    assert draws == {0, 1}  # 0.5 alone is short of 0.7; 0.5 + 0.3 reaches it


class CharTokenizer:
    """Token i is the i-th character of ``alphabet``; 255 stands for half of a two-byte character."""

    alphabet = "abcdefghijklmnopqrstuvwxyz ."

    def batch_decode(self, batch: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return ["".join("\ufffd" if t == 255 else self.alphabet[t] for t in row) for row in batch]


def feed(decoder: IncrementalDecoder, row: RowText, text: str) -> list[str]:
    return [decoder.advance([row], [CharTokenizer.alphabet.index(c)])[0] for c in text]


def test_text_deltas_add_up_and_stop_strings_never_leak() -> None:
    decoder = IncrementalDecoder(CharTokenizer())
    plain = RowText()
    assert "".join(feed(decoder, plain, "hello there")) == "hello there"

    stopping = RowText(stop=("the end", "xyz"))
    deltas = feed(decoder, stopping, "a tale. the end")
    sent = "".join(deltas)
    assert stopping.stopped and sent == "a tale. " and stopping.text == "a tale. "
    assert "".join(feed(decoder, RowText(stop=("the end",)), "to the theatre")) == "to the theatre"


def test_text_held_back_is_released_when_the_row_finishes() -> None:
    decoder = IncrementalDecoder(CharTokenizer())
    row = RowText(stop=("stop",))
    sent = "".join(feed(decoder, row, "a sto"))
    assert sent == "a " and decoder.finish(row) == "sto"


def test_a_split_character_waits_for_its_second_half() -> None:
    tokenizer: Any = CharTokenizer()
    decoder = IncrementalDecoder(tokenizer)
    row = RowText()
    assert decoder.advance([row], [0]) == ["a"]
    assert decoder.advance([row], [255]) == [""]


def test_prepacked_linears_compute_the_same_function_and_ignore_batch_neighbours(tokenizer: Any) -> None:
    plain, packed = make_tiny_model("llama", tokenizer), make_tiny_model("llama", tokenizer)
    linears = sum(type(m) is torch.nn.Linear for m in plain.model.modules())
    assert pack_linear_weights(packed) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in packed.model.modules())
    assert any(isinstance(m, PackedLinear) for m in packed.model.modules())
    ids = torch.randint(0, len(tokenizer), (5, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, batched = plain.model(ids).logits, packed.model(ids).logits
        alone = packed.model(ids[2:3]).logits
    assert torch.allclose(batched, expected, atol=1e-4), (batched - expected).abs().max()
    assert torch.equal(alone[0], batched[2])  # a row's result does not depend on its neighbours


def test_packed_linears_give_onednn_a_bounded_set_of_row_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN keeps memory for every row count it sees; a server must not show it every one."""
    linear = torch.nn.Linear(24, 40)
    packed = PackedLinear(linear, batch_hint=8)
    seen: set[int] = set()

    def counting(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        seen.add(rows.numel() // rows.shape[-1])
        return onednn_linear(rows, weight, bias)

    monkeypatch.setattr(cpu, "onednn_linear", counting)
    inputs = torch.randn(1300, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert packed(inputs[:0]).shape == (0, 40)
        for count in (1, 3, 64, 65, 100, 511, 512, 513, 1300):
            out = packed(inputs[:count].reshape(1, count, 24))
            assert out.shape == (1, count, 40)
            assert torch.allclose(out[0], linear(inputs[:count]), atol=1e-5)
        whole, alone = packed(inputs), packed(inputs[1100:1101])
    long_shapes = seen - set(range(EXACT_ROWS + 1))
    assert long_shapes <= set(range(ROW_BUCKET, CHUNK_ROWS + 1, ROW_BUCKET))
    assert torch.equal(whole[1100], alone[0])  # a row in the last piece of a long input, as alone


def test_only_float32_cpu_models_are_packed(tokenizer: Any) -> None:
    lm = make_tiny_model("llama", tokenizer)
    lm.model.to(torch.bfloat16)
    assert not can_pack(lm) and pack_linear_weights(lm) == 0


def test_a_sessions_history_becomes_alternating_messages() -> None:
    """Two user turns in a row (one recorded with AppendTurn, then a chat) are one message, as
    chat templates that insist on alternation need."""
    turns = [
        ("user", "Hi."),
        ("assistant", "Hello!"),
        ("user", "Too pricey."),
        ("user", "Rome?"),
    ]
    assert alternating(turns) == [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Too pricey.\n\nRome?"},
    ]


def test_the_engine_trims_freed_memory_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MemoryTrimmer().available  # this machine runs glibc, where malloc_trim exists
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    clock = [100.0]
    monkeypatch.setattr(memory.time, "monotonic", lambda: clock[0])
    trimmer = MemoryTrimmer(interval_s=30)
    assert not trimmer.maybe_trim() and calls == []  # the interval counts from the engine's start
    clock[0] += 31
    assert trimmer.maybe_trim() and calls == [0]
    clock[0] += 10
    assert not trimmer.maybe_trim() and calls == [0]
