"""Tensor parallelism: `steerlab inference serve --tensor-parallel 2` answers exactly as one rank does.

Two DeepSpeed AutoTP ranks on the CPU (gloo), a small random Llama, over gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from service_support import ServerThread, ServiceProcess, free_port, make_vector_set, open_store

from steerlab.inference.server import InferenceSettings, build_inference_server
from steerlab.serving import ServerSettings
from steerlab.steering import load_model
from steerlab_client import InferenceClient

REQUESTS: list[dict[str, Any]] = [
    {"messages": "Plan a dinner in Rome.", "strengths": {}},
    {"messages": "Plan a dinner in Rome.", "strengths": {"cost": 90}},
    {"messages": "What should I read next?", "strengths": {"cost": -50, "age": 70}},
    {"messages": "Say hello.", "strengths": {"age": -100}, "temperature": 0.9, "seed": 5},
]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('tp-registry') / 'steerlab.db'}"
    fingerprint = load_model(str(tiny_model_dir)).fingerprint
    store = open_store(url)
    for seed, dimension in enumerate(("cost", "age")):
        store.create_vector_set(
            make_vector_set(dimension, seed=seed, model=fingerprint, selected_layers=(1, 2), alpha_max=4.0)
        )
    store.close()
    return url


def answers(target: str) -> list[tuple[str, list[tuple[str, int, float]]]]:
    def ask(options: dict[str, Any]) -> tuple[str, list[tuple[str, int, float]]]:
        with InferenceClient(target) as client:
            answer = client.generate(max_new_tokens=16, **options)
        return answer.text, [(a.dimension, a.vector_set_version, a.strength) for a in answer.done.applied]

    with ThreadPoolExecutor(len(REQUESTS)) as pool:  # all in flight together: one shared batch
        return list(pool.map(ask, REQUESTS))


@pytest.fixture(scope="module")
def registry(database_url: str) -> Iterator[ServerThread]:
    running = ServerThread(database_url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def one_rank(tiny_model_dir: Path, registry: ServerThread) -> Iterator[ServerThread]:
    settings = InferenceSettings(
        model=str(tiny_model_dir), registry=registry.target, server=ServerSettings(port=0, metrics_port=0)
    )
    served = build_inference_server(settings)
    running = ServerThread(server=served.server, closing=served.close)
    yield running
    running.stop()


def test_two_ranks_answer_exactly_as_one(
    tiny_model_dir: Path, registry: ServerThread, one_rank: ServerThread, tmp_path: Path
) -> None:
    expected = answers(one_rank.target)
    assert len({text for text, _ in expected}) == len(REQUESTS), "steering and sampling must change answers"

    served = ServiceProcess(
        "inference",
        "",
        tmp_path,
        free_port(),
        "--registry",
        registry.target,
        "--model",
        str(tiny_model_dir),
        "--tensor-parallel",
        "2",
    )
    try:
        with InferenceClient(served.target) as client:
            assert client.get_model().tensor_parallel == 2
        assert answers(served.target) == expected
        assert answers(served.target) == expected  # and again, on a batch that has changed shape
    finally:
        assert served.stop() == 0
