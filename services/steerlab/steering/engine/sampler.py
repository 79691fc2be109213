"""Choose every row's next token in one batched operation, each row with its own parameters.

Greedy rows take the arg-max. Sampling rows use the Gumbel-max trick: temperature, top-k and
top-p filter the logits, then the arg-max of ``logits + Gumbel noise`` is an exact sample. The
noise comes from a counter-based hash of (seed, step, token id), not from a shared generator,
so a seeded request draws the same tokens whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import Sampling

_MASK_64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit constant as the signed integer torch.int64 holds."""
    value &= _MASK_64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX_1 = _signed(0xBF58476D1CE4E5B9)
_MIX_2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix(x: torch.Tensor) -> torch.Tensor:
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX_1
    x = (x ^ _shift_right(x, 27)) * _MIX_2
    return x ^ _shift_right(x, 31)


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Uniform (0, 1) noise [rows, vocab] in float64, a function of each row's seed and step only."""
    tokens = torch.arange(vocab_size, device=seeds.device, dtype=torch.long)
    key = _splitmix(_splitmix(seeds[:, None] ^ _splitmix(steps)[:, None]) + tokens[None, :])
    mantissa = _shift_right(key, 11).double()
    return (mantissa + 0.5) / float(1 << 53)


@dataclass
class SamplerRows:
    """Per-row sampling parameters of the running batch, as tensors.

    ``samples`` and ``filters`` say whether any row samples, or cuts by top-k/top-p; they are
    kept on the host so that a step never waits on the device to decide what to compute.
    """

    temperature: torch.Tensor  # [rows] float; 0 means greedy
    top_k: torch.Tensor  # [rows] long; 0 means no limit
    top_p: torch.Tensor  # [rows] float
    seed: torch.Tensor  # [rows] long
    samples: bool
    filters: bool

    @classmethod
    def build(cls, rows: Sequence[tuple[Sampling, int]], device: torch.device) -> SamplerRows:
        """From each row's parameters and its effective seed."""
        return cls(
            temperature=torch.tensor([s.temperature for s, _ in rows], device=device, dtype=torch.float),
            top_k=torch.tensor([s.top_k for s, _ in rows], device=device, dtype=torch.long),
            top_p=torch.tensor([s.top_p for s, _ in rows], device=device, dtype=torch.float),
            seed=torch.tensor([_signed(seed) for _, seed in rows], device=device, dtype=torch.long),
            samples=any(s.temperature > 0 for s, _ in rows),
            filters=any(s.temperature > 0 and (s.top_k > 0 or s.top_p < 1) for s, _ in rows),
        )

    def select(self, rows: torch.Tensor) -> SamplerRows:
        """The rows that stay (called when the batch changes, not every step)."""
        temperature, top_k, top_p = self.temperature[rows], self.top_k[rows], self.top_p[rows]
        samples = self.samples and bool((temperature > 0).any())
        filters = self.filters and bool(((temperature > 0) & ((top_k > 0) | (top_p < 1))).any())
        return SamplerRows(temperature, top_k, top_p, self.seed[rows], samples, filters)

    def concat(self, other: SamplerRows) -> SamplerRows:
        return SamplerRows(
            torch.cat([self.temperature, other.temperature]),
            torch.cat([self.top_k, other.top_k]),
            torch.cat([self.top_p, other.top_p]),
            torch.cat([self.seed, other.seed]),
            self.samples or other.samples,
            self.filters or other.filters,
        )


def _filter(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Logits outside each row's top-k and top-p set become -inf."""
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(scaled.shape[-1], device=scaled.device)[None, :]
    limit = torch.where(top_k > 0, top_k, scaled.shape[-1])[:, None]
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop = (rank >= limit) | ((mass_before >= top_p[:, None]) & (rank > 0))
    dropped = torch.zeros_like(drop).scatter(-1, order, drop)
    return scaled.masked_fill(dropped, float("-inf"))


def sample(logits: torch.Tensor, rows: SamplerRows, steps: torch.Tensor) -> torch.Tensor:
    """Next token per row [rows]; ``steps`` [rows] counts tokens each row has generated."""
    greedy = logits.argmax(dim=-1)
    if not rows.samples:
        return greedy
    scaled = logits / rows.temperature.clamp_min(1e-5)[:, None]
    if rows.filters:
        scaled = _filter(scaled, rows.top_k, rows.top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(rows.seed, steps, logits.shape[-1]))).float()
    drawn = (scaled + gumbel).argmax(dim=-1)
    return torch.where(rows.temperature > 0, drawn, greedy)
