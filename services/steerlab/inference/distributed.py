"""Tensor parallelism with DeepSpeed AutoTP: N ranks hold a shard each and run every forward together.

This process is rank 0: it serves gRPC and schedules. Ranks 1..N-1 are child processes that
load the same model, shard it the same way, and replay every runner call rank 0 makes (prefill,
decode, retain), which rank 0 broadcasts before running it itself. Only rank 0 samples; the
sampled tokens reach the others as the next decode call's input. Each rank's KV cache holds its
own heads; decoder-layer outputs are full-size and identical on every rank, so steering hooks
run unchanged everywhere.

On the CPU, ranks talk over gloo. DeepSpeed's compiled shared-memory all-reduce is turned off:
it crashed here, and it waits forever on a dead peer, where gloo times out.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from steerlab.steering.adapters import adapt
from steerlab.steering.batching import RowSteering
from steerlab.steering.engine import ModelRunner
from steerlab.steering.models import LoadedModel, load_model

from .placement import Placement

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess


log = logging.getLogger(__name__)

# A rank waits this long for the next call; rank 0 pings every second while idle.
PEER_TIMEOUT = timedelta(seconds=120)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_shard(placement: Placement, rank: int, world_size: int, port: int) -> LoadedModel:
    """Join the process group as ``rank`` and load this rank's shard of the model."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    device = placement.torch_device()
    on_gpu = device.startswith("cuda")
    if on_gpu:
        device = f"cuda:{rank}"
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    # DeepSpeed prints to stdout; stdout belongs to the server's one-line banner.
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed
        from deepspeed.inference.engine import InferenceEngine as DeepSpeedEngine

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(
            dist_backend="nccl" if on_gpu else "gloo",
            auto_mpi_discovery=False,
            timeout=PEER_TIMEOUT,
            verbose=False,
        )
        # Otherwise DeepSpeed makes its tensor-parallel group with torch's 30-minute timeout.
        DeepSpeedEngine.inference_mp_group = dist.new_group(list(range(world_size)), timeout=PEER_TIMEOUT)
        # The fingerprint is taken from the full weights, before sharding.
        lm = load_model(placement.model, dtype=placement.torch_dtype(), device=device)
        sharded = deepspeed.init_inference(
            lm.model,
            tensor_parallel={"tp_size": world_size},
            dtype=placement.torch_dtype(),
            replace_with_kernel_inject=False,
        )
    lm.model = sharded.module
    lm.adapter = adapt(sharded.module)
    return lm


def _broadcast(command: list[Any]) -> list[Any]:
    dist.broadcast_object_list(command, src=0)
    return command


def _portable(rows: Sequence[RowSteering]) -> list[RowSteering]:
    """Steering rows with CPU tensors, so any rank can unpickle them."""
    return [
        RowSteering(
            {site: (delta.cpu(), steered.cpu()) for site, (delta, steered) in row.deltas.items()}, row.applied
        )
        for row in rows
    ]


def _on_device(rows: Sequence[RowSteering], device: torch.device) -> list[RowSteering]:
    return [
        RowSteering(
            {site: (delta.to(device), steered.to(device)) for site, (delta, steered) in row.deltas.items()},
            row.applied,
        )
        for row in rows
    ]


class DistributedRunner(ModelRunner):
    """Rank 0's runner: every call is broadcast to the other ranks, then run here."""

    def __init__(self, lm: LoadedModel, workers: Sequence[BaseProcess], world_size: int) -> None:
        super().__init__(lm)
        self.workers = list(workers)
        self.world_size = world_size

    def prefill(self, prompts: Sequence[Sequence[int]], steering: Sequence[RowSteering]) -> torch.Tensor:
        _broadcast(["prefill", [list(p) for p in prompts], _portable(steering)])
        return super().prefill(prompts, steering)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        _broadcast(["decode", tokens.cpu(), None])
        return super().decode(tokens)

    def retain(self, rows: Sequence[int]) -> None:
        _broadcast(["retain", list(rows), None])
        super().retain(rows)

    def idle(self) -> None:
        _broadcast(["idle", None, None])

    def close(self) -> None:
        try:
            _broadcast(["close", None, None])
        except RuntimeError as exc:
            log.warning("could not reach the other ranks to stop them: %s", exc)
        for worker in self.workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
        dist.destroy_process_group()


def _serve_rank(placement: Placement, rank: int, world_size: int, port: int) -> None:
    """A child rank: load its shard, then replay rank 0's calls until told to close."""
    from transformers.utils import logging as transformers_logging

    sys.stdout = sys.stderr
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    runner = ModelRunner(load_shard(placement, rank, world_size, port))
    while True:
        op, first, second = _broadcast([None, None, None])
        if op == "close":
            break
        if op == "prefill":
            runner.prefill(first, _on_device(second, runner.device))
        elif op == "decode":
            runner.decode(first.to(runner.device))
        elif op == "retain":
            runner.retain(first)
    dist.destroy_process_group()


def start_tensor_parallel(placement: Placement) -> DistributedRunner:
    """Start ranks 1..N-1 as child processes and load rank 0's shard here."""
    world_size = placement.tensor_parallel
    if placement.torch_device().startswith("cuda") and torch.cuda.device_count() < world_size:
        raise ValueError(
            f"--tensor-parallel {world_size} needs {world_size} GPUs; {torch.cuda.device_count()} found"
        )
    port = _free_port()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_serve_rank, args=(placement, rank, world_size, port), daemon=True, name=f"rank-{rank}"
        )
        for rank in range(1, world_size)
    ]
    for worker in workers:
        worker.start()
    return DistributedRunner(load_shard(placement, 0, world_size, port), workers, world_size)
