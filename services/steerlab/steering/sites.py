"""Activation sites: where in a decoder layer activations are read and steering is added.

- ``norm`` (default): the output of the layer's pre-attention norm, i.e. the normalised
  residual stream that feeds attention.
- ``residual``: the residual stream entering the layer.

Hooks are scoped: :func:`hooked` removes every hook it added, even when the forward raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from .adapters import ArchitectureAdapter
from .config import check_site

# Receives a site's activation [batch, seq, hidden]; returns a replacement, or None to keep it.
Transform = Callable[[torch.Tensor], "torch.Tensor | None"]


def _hook_norm(adapter: ArchitectureAdapter, layer: int, transform: Transform) -> RemovableHandle:
    def hook(_module: torch.nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
        return transform(output)

    return adapter.norms[layer].register_forward_hook(hook)


def _hook_residual(adapter: ArchitectureAdapter, layer: int, transform: Transform) -> RemovableHandle:
    def pre_hook(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if args:
            replaced = transform(args[0])
            return None if replaced is None else ((replaced, *args[1:]), kwargs)
        replaced = transform(kwargs["hidden_states"])
        return None if replaced is None else (args, {**kwargs, "hidden_states": replaced})

    return adapter.layers[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)


def attach(adapter: ArchitectureAdapter, site: str, layer: int, transform: Transform) -> RemovableHandle:
    """Hook ``transform`` at ``site`` of ``layer`` until the returned handle is removed."""
    check_site(site)
    return (_hook_norm if site == "norm" else _hook_residual)(adapter, layer, transform)


@contextmanager
def hooked(adapter: ArchitectureAdapter, site: str, transforms: Mapping[int, Transform]) -> Iterator[None]:
    """Attach ``transforms[layer]`` at ``site`` of each layer for the duration of the block."""
    check_site(site)
    handles: list[RemovableHandle] = []
    try:
        for layer, transform in transforms.items():
            handles.append(attach(adapter, site, layer, transform))
        yield
    finally:
        for handle in handles:
            handle.remove()
