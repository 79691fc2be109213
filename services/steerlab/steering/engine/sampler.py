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
    return token_noise(seeds, steps, tokens[None, :])


def token_noise(seeds: torch.Tensor, steps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The noise :func:`uniform_noise` gives each row at the token ids ``tokens`` [rows or 1, n]."""
    key = _splitmix(_splitmix(seeds[:, None] ^ _splitmix(steps)[:, None]) + tokens)
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
    # The largest top-k of the sampling rows, or 0 if one of them samples the whole vocabulary:
    # then no sampling row can draw a token outside the ``candidates`` best of its own logits.
    candidates: int

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
            candidates=_candidates([(s.temperature, s.top_k) for s, _ in rows]),
        )

    def select(self, rows: torch.Tensor) -> SamplerRows:
        """The rows that stay (called when the batch changes, not every step)."""
        temperature, top_k, top_p = self.temperature[rows], self.top_k[rows], self.top_p[rows]
        samples = self.samples and bool((temperature > 0).any())
        filters = self.filters and bool(((temperature > 0) & ((top_k > 0) | (top_p < 1))).any())
        candidates = _candidates(list(zip(temperature.tolist(), top_k.tolist(), strict=True)))
        return SamplerRows(temperature, top_k, top_p, self.seed[rows], samples, filters, candidates)

    def concat(self, other: SamplerRows) -> SamplerRows:
        return SamplerRows(
            torch.cat([self.temperature, other.temperature]),
            torch.cat([self.top_k, other.top_k]),
            torch.cat([self.top_p, other.top_p]),
            torch.cat([self.seed, other.seed]),
            self.samples or other.samples,
            self.filters or other.filters,
            _joint_candidates(self, other),
        )


def _joint_candidates(first: SamplerRows, second: SamplerRows) -> int:
    """``candidates`` of two batches joined: only sampling rows constrain it."""
    sampling = [rows.candidates for rows in (first, second) if rows.samples]
    return 0 if not sampling or 0 in sampling else max(sampling)


def _candidates(rows: Sequence[tuple[float, int]]) -> int:
    """``SamplerRows.candidates`` for rows of (temperature, top-k)."""
    limits = [top_k for temperature, top_k in rows if temperature > 0]
    return 0 if not limits or 0 in limits else max(limits)


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


def _filter_candidates(
    scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, candidates: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_filter` keeps, computed on each row's ``candidates`` best logits only:
    (their logits, -inf where dropped [rows, candidates]; their token ids). Top-p's mass is
    normalised over the whole vocabulary, as in :func:`_filter`."""
    best, ids = scaled.topk(candidates, dim=-1)
    rank = torch.arange(candidates, device=scaled.device)[None, :]
    limit = torch.where(top_k > 0, top_k, candidates)[:, None]
    probs = (best - scaled.logsumexp(dim=-1, keepdim=True)).exp()
    mass_before = probs.cumsum(dim=-1) - probs
    drop = (rank >= limit) | ((mass_before >= top_p[:, None]) & (rank > 0))
    return best.masked_fill(drop, float("-inf")), ids


def sample(logits: torch.Tensor, rows: SamplerRows, steps: torch.Tensor) -> torch.Tensor:
    """Next token per row [rows]; ``steps`` [rows] counts tokens each row has generated.

    When every sampling row has a top-k, only the best ``rows.candidates`` logits per row are
    sorted and get noise: the same draw as over the whole vocabulary (nothing outside them can
    win), at a fraction of the cost.
    """
    greedy = logits.argmax(dim=-1)
    if not rows.samples:
        return greedy
    scaled = logits / rows.temperature.clamp_min(1e-5)[:, None]
    if 0 < rows.candidates < scaled.shape[-1]:
        kept, ids = _filter_candidates(scaled, rows.top_k, rows.top_p, rows.candidates)
        gumbel = -torch.log(-torch.log(token_noise(rows.seed, steps, ids))).float()
        drawn = ids.gather(-1, (kept + gumbel).argmax(dim=-1, keepdim=True)).squeeze(-1)
        return torch.where(rows.temperature > 0, drawn, greedy)
    if rows.filters:
        scaled = _filter(scaled, rows.top_k, rows.top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(rows.seed, steps, logits.shape[-1]))).float()
    drawn = (scaled + gumbel).argmax(dim=-1)
    return torch.where(rows.temperature > 0, drawn, greedy)
