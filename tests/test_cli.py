"""The command line as a user runs it: real processes, a tiny model saved to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import make_tiny_model, small_dataset


def steerlab(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEERLAB_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "steerlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """A tiny llama saved as a Hugging Face directory, a custom dataset file, and a vector set."""
    root = tmp_path_factory.mktemp("cli")
    lm = make_tiny_model("llama", tokenizer)
    model_dir = root / "tiny-llama"
    lm.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    other_dir = root / "tiny-qwen2"
    other = make_tiny_model("qwen2", tokenizer)
    other.model.save_pretrained(other_dir)
    tokenizer.save_pretrained(other_dir)

    dataset = small_dataset()
    dataset_file = root / "price.jsonl"
    header = {**dataset.dimension.to_dict(), "dimension": "price"}
    del header["name"]
    lines = [json.dumps(header)] + [
        json.dumps({"prompt": e.prompt, "completion": e.completion, "label": e.label})
        for e in dataset.examples
    ]
    dataset_file.write_text("\n".join(lines) + "\n")
    return {"root": root, "model": model_dir, "other": other_dir, "dataset": dataset_file}


def test_dimensions_lists_the_five_builtin_dimensions(tmp_path: Path) -> None:
    result = steerlab("dimensions", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["name"], r["negative_pole"], r["positive_pole"]) for r in rows] == [
        ("cost", "budget", "luxury"),
        ("ambiance", "touristy", "hipster"),
        ("age", "kids", "adults"),
        ("time", "evening", "morning"),
        ("culture", "asian", "american"),
    ]
    table = steerlab("dimensions", home=tmp_path).stdout
    assert "budget" in table and "hipster" in table


@pytest.fixture(scope="module")
def extracted(workspace: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """`steerlab extract` on the custom dataset; writes price.safetensors into the workspace."""
    return steerlab(
        "extract",
        "--model",
        workspace["model"],
        "--dataset",
        workspace["dataset"],
        "--method",
        "mean-diff",
        "--top-k",
        "2",
        "--out",
        workspace["root"] / "price.safetensors",
        home=workspace["root"],
    )


def test_extract_then_generate(
    workspace: dict[str, Path], extracted: subprocess.CompletedProcess[str]
) -> None:
    home, out = workspace["root"], workspace["root"] / "price.safetensors"
    assert extracted.returncode == 0, extracted.stderr
    for field in ("layers", "alpha_max", "held-out", "limited by", "repeated 4-grams"):
        assert field in extracted.stdout
    assert out.exists()

    result = steerlab(
        "generate",
        "--model",
        workspace["model"],
        "--vectors",
        out,
        "--steer",
        "price=+60",
        "--max-new-tokens",
        "5",
        "--json",
        "Plan a dinner.",
        home=home,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer["text"], str) and answer["text"]
    assert answer["steering"]["price"]["percent"] == 60
    assert answer["steering"]["price"]["alpha"] > 0


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda w: [
                "generate",
                "--model",
                w["model"],
                "--vectors",
                w["root"] / "missing.safetensors",
                "hi",
            ],
            "vector set file not found",
        ),
        (
            lambda w: [
                "extract",
                "--model",
                w["model"],
                "--dimension",
                "price",
                "--out",
                w["root"] / "x.safetensors",
            ],
            "unknown dimension 'price'",
        ),
        (
            lambda w: [
                "generate",
                "--model",
                w["model"],
                "--vectors",
                w["root"] / "price.safetensors",
                "--steer",
                "price=150",
                "hi",
            ],
            "outside -100..100",
        ),
        (
            lambda w: [
                "generate",
                "--model",
                w["model"],
                "--vectors",
                w["root"] / "price.safetensors",
                "--steer",
                "cost=10",
                "hi",
            ],
            "unknown dimension 'cost'",
        ),
        (
            lambda w: [
                "generate",
                "--model",
                w["other"],
                "--vectors",
                w["root"] / "price.safetensors",
                "--steer",
                "price=10",
                "hi",
            ],
            "extracted from a different model",
        ),
        (lambda w: ["generate", "--model", "no-such-model", "hi"], "no model 'no-such-model'"),
        (lambda w: ["generate", "--model", w["model"], "--steer", "price", "hi"], "is not NAME=PCT"),
        (
            lambda w: [
                "extract",
                "--model",
                w["model"],
                "--dataset",
                w["root"] / "none.jsonl",
                "--out",
                w["root"] / "x.safetensors",
            ],
            "dataset file not found",
        ),
    ],
)
def test_errors_are_one_clear_line(
    workspace: dict[str, Path], extracted: subprocess.CompletedProcess[str], make_args: Any, message: str
) -> None:
    assert extracted.returncode == 0, extracted.stderr
    result = steerlab(*make_args(workspace), home=workspace["root"])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
