"""The model side of the engine: one forward per step for the whole batch, steering row by row.

The runner owns the running batch's KV state and steering tensors and nothing about requests;
the scheduler decides which rows join and leave. Under tensor parallelism every rank holds an
identical runner and replays the same calls (see :mod:`steerlab.inference.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..apply import apply_plan
from ..batching import BatchSteering, RowSteering
from ..chat import pad_token_ids
from ..models import LoadedModel
from .kv import BatchKV, positions_from_mask


class ModelRunner:
    """Runs prefill and decode forwards for the running batch of one loaded model."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.device = lm.device
        self.dtype = lm.dtype
        self.kv = BatchKV(self.device)
        self.steering = BatchSteering(lm.num_layers, lm.hidden_size, self.device, self.dtype)

    @property
    def rows(self) -> int:
        return self.kv.rows

    def prefill(self, prompts: Sequence[Sequence[int]], steering: Sequence[RowSteering]) -> torch.Tensor:
        """Run new rows' prompts, append them to the batch; returns their next-token logits."""
        input_ids, attention_mask = pad_token_ids(prompts, self.lm.tokenizer.pad_token_id or 0, "left")
        attention_mask = attention_mask.to(self.device)
        joining = BatchKV(self.device)
        joining.attention_mask = attention_mask
        joining.next_position = attention_mask.sum(dim=1)
        rows = self.steering.like()
        rows.append(steering)
        logits = self._forward(
            input_ids.to(self.device), attention_mask, positions_from_mask(attention_mask), joining, rows
        )
        self.kv.merge(joining)
        self.steering.extend(rows)
        return logits

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row its newest token; returns next-token logits [rows, vocab]."""
        attention_mask, positions = self.kv.step_inputs()
        return self._forward(
            tokens[:, None].to(self.device), attention_mask, positions, self.kv, self.steering
        )

    def retain(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` of the batch, in that order."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.kv.retain(index)
        self.steering.retain(index)

    def idle(self) -> None:
        """Called about once a second while there is no work (a distributed runner pings its peers)."""

    def close(self) -> None:
        """Release the batch; a distributed runner also tells its peers to exit."""
        self.retain([])

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        kv: BatchKV,
        steering: BatchSteering,
    ) -> torch.Tensor:
        with torch.no_grad(), apply_plan(self.lm, steering.plan):
            output = self.lm.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=kv.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits: torch.Tensor = output.logits[:, -1].float()
        return logits
