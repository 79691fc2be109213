"""The running batch's model-side state: KV cache, attention mask and positions, row by row.

Rows are right-aligned: every row's newest token sits in the last column, so one decode step
feeds one token per row. A row that joins with a shorter history than the others is padded on
the left; one with a longer history pads everyone else. Padding is masked out of attention and
never changes a row's result, which is what lets requests join and leave between steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Columns of room a cache layer keeps ahead, so that a decode step writes in place.
GROWTH = 64


class GrowingLayer(DynamicLayer):  # type: ignore[misc]
    """A KV cache layer with room to grow: a step writes its token into spare columns.

    ``keys``/``values`` are views of the first ``length`` columns of larger buffers, so a
    decode step costs one small copy instead of re-concatenating the whole layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.is_initialized: bool = False
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents (after rows joined or left)."""
        self.keys, self.values = keys, values
        self._key_buffer = self._value_buffer = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.device, self.is_initialized = key_states.device, True
            self.adopt(key_states[..., :0, :], value_states[..., :0, :])
        assert self.keys is not None and self.values is not None
        length, added = self.keys.shape[-2], key_states.shape[-2]
        if (
            self._key_buffer is None
            or self._value_buffer is None
            or length + added > self._key_buffer.shape[-2]
        ):
            self._key_buffer = _with_room(self.keys, length + added + GROWTH)
            self._value_buffer = _with_room(self.values, length + added + GROWTH)
        self._key_buffer[..., length : length + added, :] = key_states
        self._value_buffer[..., length : length + added, :] = value_states
        self.keys = self._key_buffer[..., : length + added, :]
        self.values = self._value_buffer[..., : length + added, :]
        return self.keys, self.values


def _with_room(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    buffer = tensor.new_empty((*tensor.shape[:-2], columns, tensor.shape[-1]))
    buffer[..., : tensor.shape[-2], :] = tensor
    return buffer


def new_cache() -> DynamicCache:
    """An empty cache whose layers are :class:`GrowingLayer`."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens (padding gets 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


def _pad_cache_left(cache: DynamicCache, columns: int) -> None:
    if columns == 0:
        return
    for layer in cache.layers:
        layer.adopt(F.pad(layer.keys, (0, 0, columns, 0)), F.pad(layer.values, (0, 0, columns, 0)))


class BatchKV:
    """KV cache, attention mask [rows, width] and next position [rows] of the running batch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._empty()

    def _empty(self) -> None:
        self.cache = new_cache()
        self.attention_mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.next_position = torch.zeros(0, dtype=torch.long, device=self.device)

    @property
    def rows(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.attention_mask.shape[1])

    def merge(self, other: BatchKV) -> None:
        """Append ``other``'s rows after this batch's rows, padding the narrower side."""
        if self.rows == 0:
            self.cache, self.attention_mask, self.next_position = (
                other.cache,
                other.attention_mask,
                other.next_position,
            )
            return
        width = max(self.width, other.width)
        for batch in (self, other):
            _pad_cache_left(batch.cache, width - batch.width)
            batch.attention_mask = F.pad(batch.attention_mask, (width - batch.width, 0))
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.adopt(torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values]))
        self.attention_mask = torch.cat([self.attention_mask, other.attention_mask])
        self.next_position = torch.cat([self.next_position, other.next_position])

    def retain(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices, in order), then drop columns that are padding everywhere."""
        if rows.numel() == 0:
            self._empty()
            return
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]
        unused = int(self.attention_mask.any(dim=0).int().argmax())
        for layer in self.cache.layers:
            layer.adopt(layer.keys[rows, :, unused:], layer.values[rows, :, unused:])
        self.attention_mask = self.attention_mask[:, unused:]

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Extend the mask by one column for the next token; returns (attention_mask, position_ids)."""
        ones = torch.ones((self.rows, 1), dtype=torch.long, device=self.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self.attention_mask, positions
