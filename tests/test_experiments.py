"""`steerlab experiments run` as a user runs it: a real process, quick scale, a tiny model on disk.

The committed report in docs/results/ comes from the full scale on smollm2-135m; here the point
is that every experiment runs end to end and writes every file its report links to.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_FILES = {
    "e1_sweep.csv", "e1_answers.csv", "e1_pne.json", "e1_method_layers.csv", "e1_methods.csv",
    "e1_sweep.png", "e1_pne.png", "e1_methods.png",
    "e2_answers.csv", "e2_additivity.csv", "e2_additivity.png",
    "e3_grid_answers.csv", "e3_grid.csv", "e3_slopes.csv", "e3_crosstalk.csv", "e3_grid.png",
    "e3_crosstalk.png",
    "e4_rulers.json", "e4_users.csv", "e4_convergence.png",
}  # fmt: skip


def experiments(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steerlab.cli", "experiments", "run", *map(str, args)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("experiments") / "results"
    result = experiments("all", "--model", tiny_model_dir, "--out", out, "--quick")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith(f"report: {out / 'README.md'}")
    return out


def test_a_quick_run_of_all_four_writes_every_file_its_report_links_to(quick_run: Path) -> None:
    report = (quick_run / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)]+)\)", report))
    assert links == EXPECTED_FILES
    for name in links:
        path = quick_run / name
        assert path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        elif name.endswith(".csv"):
            assert rows(path), f"{name} has no data rows"
        else:
            assert json.loads(path.read_text(encoding="utf-8")), name
    for title in ("## E1:", "## E2:", "## E3:", "## E4:", "## How this setup differs from the paper"):
        assert title in report
    assert "--quick" in report and "quick scale" in report  # the command that produced it
    findings = report.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert {f"**E{i}**" for i in range(1, 5)} <= set(re.findall(r"\*\*E\d\*\*", findings))


def test_the_quick_run_covers_every_dimension_and_condition(quick_run: Path) -> None:
    dimensions = ["cost", "ambiance", "age", "time", "culture"]
    sweep = rows(quick_run / "e1_sweep.csv")
    assert [r["dimension"] for r in sweep[::5]] == dimensions
    assert [float(r["multiple"]) for r in sweep[:5]] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    unsteered = [r for r in sweep if float(r["multiple"]) == 0.0]
    assert all(float(r["heldout_ratio"]) == 1.0 for r in unsteered)
    assert all(math.isfinite(float(r["effect"])) and float(r["heldout_perplexity"]) > 1 for r in sweep)
    assert {r["method"] for r in rows(quick_run / "e1_methods.csv")} == {"logistic", "mean-diff", "pca"}
    assert [r["dimension"] for r in rows(quick_run / "e2_additivity.csv")] == dimensions
    assert {r["condition"] for r in rows(quick_run / "e2_answers.csv")} == {
        "plain",
        "stated",
        "steered",
        "both",
    }
    crosstalk = rows(quick_run / "e3_crosstalk.csv")
    assert [r["steered"] for r in crosstalk] == dimensions
    assert all(len(r) == 6 for r in crosstalk)
    assert len(rows(quick_run / "e3_grid.csv")) == 4  # 2 x 2 strengths at quick scale
    users = rows(quick_run / "e4_users.csv")
    assert sorted({r["reading"] for r in users}) == ["oracle", "reads answers"]
    assert all(len(r["trajectory"].split()) == 2 for r in users)  # 2 turns at quick scale
    assert all(75 <= abs(float(r["target"])) <= 100 for r in users)


def test_one_experiment_alone_writes_only_its_own_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = experiments("e2", "--model", tiny_model_dir, "--out", tmp_path / "e2", "--quick")
    assert result.returncode == 0, result.stderr[-4000:]
    written = {p.name for p in (tmp_path / "e2").iterdir()}
    assert written == {"README.md", "e2_answers.csv", "e2_additivity.csv", "e2_additivity.png"}
    report = (tmp_path / "e2" / "README.md").read_text(encoding="utf-8")
    assert "## E2:" in report and "## E1:" not in report


def test_bad_input_exits_with_one_clear_line(tmp_path: Path) -> None:
    missing = experiments("e1", "--model", tmp_path / "no-such-model", "--out", tmp_path / "out", "--quick")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("steerlab: error:") and "no-such-model" in missing.stderr
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    clash = experiments("e1", "--out", a_file, "--quick")
    assert clash.returncode == 1 and "is a file" in clash.stderr
    unknown = experiments("e5", "--out", tmp_path / "out")
    assert unknown.returncode == 2 and "invalid choice: 'e5'" in unknown.stderr
    assert not (tmp_path / "out").exists()  # nothing was written for a run that never started
