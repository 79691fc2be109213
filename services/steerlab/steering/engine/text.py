"""Turn each row's growing token list into text deltas, and stop at stop strings.

Decoding is incremental and batched: one ``batch_decode`` call per step for all rows decodes
only each row's last few tokens. Text that could still become a stop string is held back until
it cannot, so a stop string never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowText:
    """One row's decoding state: tokens so far, the text sent, and its stop strings."""

    stop: tuple[str, ...] = ()
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # everything decoded so far
    sent: int = 0  # how many characters of ``text`` were sent
    prefix_offset: int = 0  # tokens[prefix_offset:read_offset] decode to text already counted
    read_offset: int = 0
    stopped: bool = False

    def hold_back(self) -> int:
        """Characters at the end of ``text`` that might be the start of a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


class IncrementalDecoder:
    """Advances many rows' text by their newest tokens, all rows in one tokenizer call."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def advance(self, rows: Sequence[RowText], tokens: Sequence[int]) -> list[str]:
        """Append one token per row; returns the text each row may send now."""
        for row, token in zip(rows, tokens, strict=True):
            row.tokens.append(token)
        windows = [row.tokens[row.prefix_offset : row.read_offset] for row in rows]
        windows += [row.tokens[row.prefix_offset :] for row in rows]
        decoded = self.tokenizer.batch_decode(windows, skip_special_tokens=True)
        return [self._extend(row, decoded[i], decoded[len(rows) + i]) for i, row in enumerate(rows)]

    def finish(self, row: RowText) -> str:
        """Whatever was held back, now that the row is done (no more tokens can complete a stop)."""
        if row.stopped:
            return ""
        rest = row.text[row.sent :]
        row.sent = len(row.text)
        return rest

    @staticmethod
    def _extend(row: RowText, before: str, after: str) -> str:
        if row.stopped:
            return ""
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for the next token
        row.text += after[len(before) :]
        row.prefix_offset, row.read_offset = row.read_offset, len(row.tokens)
        for stop in row.stop:
            found = row.text.find(stop, max(0, row.sent - len(stop)))
            if found != -1:
                row.text = row.text[:found]
                row.stopped = True
        if row.stopped:
            delta = row.text[row.sent :]
            row.sent = len(row.text)
            return delta
        ready = len(row.text) - row.hold_back()
        delta = row.text[row.sent : ready]
        row.sent = max(row.sent, ready)
        return delta
