"""`steerlab registry serve` and `steerlab vectors ...` as a user runs them: real processes,
a real PostgreSQL, and a pulled file used by `steerlab generate`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_tiny_model, small_dataset
from service_support import ServiceProcess, free_port, fresh_postgres_database, make_vector_set
from test_cli import steerlab

from steerlab.steering import Dimension, ExtractionConfig, extract


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """A tiny llama on disk and a cost vector set extracted from it."""
    root = tmp_path_factory.mktemp("registry-cli")
    lm = make_tiny_model("llama", tokenizer)
    lm.model.save_pretrained(root / "tiny-llama")
    tokenizer.save_pretrained(root / "tiny-llama")
    extract(lm, small_dataset(), ExtractionConfig(method="mean-diff", top_k=2)).save(
        root / "cost.safetensors"
    )
    return {"root": root, "model": root / "tiny-llama", "vectors": root / "cost.safetensors"}


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def test_push_list_pull_generate_restart_alias(
    files: dict[str, Path], database_url: str, tmp_path: Path
) -> None:
    home, port = files["root"], free_port()
    server = ServiceProcess("registry", database_url, home, port)
    assert "database postgresql://127.0.0.1:5432/steerlab_test_" in server.banner
    registry = ("--registry", server.target)
    try:
        pushed = steerlab(
            "vectors",
            "push",
            files["vectors"],
            "--label",
            "run=ci",
            "--alias",
            "production",
            *registry,
            home=home,
        )
        assert pushed.returncode == 0, pushed.stderr
        assert re.search(r"pushed cost v1 \(tiny-llama [0-9a-f]{12}\): 2 layers", pushed.stdout)
        assert "production: cost (new) -> v1" in pushed.stdout
        steerlab("vectors", "push", files["vectors"], *registry, home=home)  # v2: same vectors, new version

        custom = tmp_path / "spice.safetensors"
        make_vector_set(Dimension("spice", "mild", "hot", "How spicy.")).save(custom)
        unknown = steerlab("vectors", "push", custom, *registry, home=home)
        assert unknown.returncode == 1 and "NOT_FOUND: unknown dimension 'spice'" in unknown.stderr
        created = steerlab("vectors", "push", custom, "--create-dimension", *registry, home=home)
        assert "registered dimension spice (mild <-> hot)" in created.stdout, created.stderr
        assert "pushed spice v1 (tiny-a" in created.stdout

        listing = steerlab("vectors", "list", *registry, home=home).stdout
        assert re.search(r"^cost\s+1 tiny-llama .* production$", listing, re.M), listing
        assert re.search(r"^cost\s+2 tiny-llama ", listing, re.M), listing

        pulled_path = tmp_path / "pulled.safetensors"
        pulled = steerlab("vectors", "pull", "cost@production", "--out", pulled_path, *registry, home=home)
        assert pulled.returncode == 0, pulled.stderr
        assert "pulled cost v1 (tiny-llama" in pulled.stdout

        def answer(vectors: Path) -> str:
            result = steerlab(
                "generate",
                "--model",
                files["model"],
                "--vectors",
                vectors,
                "--steer",
                "cost=100",
                "--max-new-tokens",
                "8",
                "Plan a dinner.",
                home=home,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        assert answer(pulled_path) == answer(files["vectors"])
    finally:
        assert server.stop() == 0  # SIGTERM is a clean shutdown

    restarted = ServiceProcess("registry", database_url, home, port)
    try:
        again = tmp_path / "again.safetensors"
        assert steerlab("vectors", "pull", "cost@1", "--out", again, *registry, home=home).returncode == 0
        assert again.read_bytes() == pulled_path.read_bytes()

        moved = steerlab("vectors", "alias", "cost@2", "production", *registry, home=home)
        assert "production: cost v1 -> v2" in moved.stdout, moved.stderr
        refused = steerlab("vectors", "delete", "cost@2", *registry, home=home)
        assert refused.returncode == 1
        assert (
            refused.stderr.strip().splitlines() == [refused.stderr.strip()]
            and "FAILED_PRECONDITION" in refused.stderr
            and "production" in refused.stderr
        )
        assert "deleted cost v1" in steerlab("vectors", "delete", "cost@1", *registry, home=home).stdout
        missing = steerlab("vectors", "pull", "cost@1", "--out", tmp_path / "x", *registry, home=home)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "was deleted" in missing.stderr
    finally:
        assert restarted.stop() == 0


def test_cli_errors_are_one_clear_line(files: dict[str, Path], tmp_path: Path) -> None:
    home = files["root"]
    nowhere = ("--registry", f"127.0.0.1:{free_port()}")
    cases = [
        (["vectors", "push", tmp_path / "missing.safetensors", *nowhere], "No such file"),
        (["vectors", "pull", "cost@", "--out", tmp_path / "x", *nowhere], "NAME@VERSION"),
        (["vectors", "alias", "cost", "production", *nowhere], "with a version number"),
        (["vectors", "push", files["vectors"], "--label", "novalue", *nowhere], "is not KEY=VALUE"),
        (["vectors", "list", *nowhere], "UNAVAILABLE"),
        (["registry", "serve", "--database-url", "mysql://x/y"], "unsupported database URL"),
    ]
    for args, message in cases:
        result = steerlab(*args, home=home)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
