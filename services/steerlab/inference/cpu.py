"""CPU fast path: every linear layer through oneDNN with its weight prepacked once.

On the CPU a decode step is a few dozen small matrix products (batch rows x hidden), and the
default BLAS path re-lays-out each weight on every call. oneDNN with the weight packed once
into its blocked layout does the same float32 product about 1.3x faster per layer and 2x
faster for the vocabulary projection (``scripts/bench_inference.py --plain-linears`` measures
the engine without it). A row's result does not depend on which other rows share the batch,
so per-request outputs stay identical alone and in any batch.

oneDNN keeps, for good, about 0.6 MiB for every distinct number of input rows it has been
given. Decode steps have at most ``max_batch`` rows, but prefills come in every total length,
so a server's memory grew without bound (the soak test found it: +850 MiB in ten minutes).
Inputs of up to ``EXACT_ROWS`` rows (every decode step) go to oneDNN as they are; longer ones are
cut into pieces of ``CHUNK_ROWS`` and the last piece is padded to a multiple of ``ROW_BUCKET``:
at most ``EXACT_ROWS + CHUNK_ROWS / ROW_BUCKET`` shapes, whatever the traffic.
"""

from __future__ import annotations

import torch
from torch import nn

from steerlab.steering.models import LoadedModel

EXACT_ROWS = 64  # decode batches: padding them would cost up to a quarter of a step
ROW_BUCKET = 32  # a prefill pads at most 31 rows
CHUNK_ROWS = 512  # long enough that a prefill piece runs at full speed


def onednn_linear(rows: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weight.T + bias`` through oneDNN, the weight prepacked."""
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(rows, packed_weight, bias, "none", [], "")
    return out


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward, with the weight held in oneDNN's packed layout."""

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() <= EXACT_ROWS * self.in_features:
            return onednn_linear(x, self.packed_weight, self.bias)
        rows = x.reshape(-1, self.in_features)
        pieces = [
            self._bucketed(rows[start : start + CHUNK_ROWS]) for start in range(0, len(rows), CHUNK_ROWS)
        ]
        return torch.cat(pieces).reshape(*x.shape[:-1], self.out_features)

    def _bucketed(self, rows: torch.Tensor) -> torch.Tensor:
        """The product for at most ``CHUNK_ROWS`` rows, computed on a multiple of ``ROW_BUCKET``."""
        count = len(rows)
        padded = -(-count // ROW_BUCKET) * ROW_BUCKET
        if padded != count:
            rows = torch.cat([rows, rows.new_zeros(padded - count, self.in_features)])
        return onednn_linear(rows, self.packed_weight, self.bias)[:count]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def can_pack(lm: LoadedModel) -> bool:
    """Packing applies to a float32 model on the CPU where PyTorch has oneDNN."""
    if lm.device.type != "cpu" or lm.dtype != torch.float32:
        return False
    return bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


def pack_linear_weights(lm: LoadedModel, batch_hint: int = 32) -> int:
    """Replace every ``nn.Linear`` of ``lm`` with a :class:`PackedLinear`; returns how many.

    The model keeps computing the same function (to float32 rounding), so hooks, steering and
    ``generate`` work as before; it is meant for a model that serves inference only. A model
    that cannot be packed (see :func:`can_pack`) is left as it is.
    """
    if not can_pack(lm):
        return 0
    replaced = 0
    for parent in list(lm.model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child, batch_hint))
                replaced += 1
    return replaced
