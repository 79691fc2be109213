"""README command one: `steerlab demo` starts the platform on the built-in model, shows it working
through the SDK, and stops it, leaving nothing running; with `--auth keys` it does the same with
an API key of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["none", "keys"])
def test_the_demo_runs_the_platform_end_to_end_and_leaves_nothing_running(auth: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "steerlab.cli", "demo", "--max-new-tokens", "16", "--auth", auth],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    for heading in (
        "== The platform at 127.0.0.1:",
        "== One request, four preference mixes",
        "== CALIBRATE:",
        "== LEARN:",
        "== The LEARN session's history",
        "== Metrics (http://127.0.0.1:",
    ):
        assert heading in output, output[-3000:]
    assert "cost      budget <-> luxury  (production -> v" in output
    assert "calibrated strengths: {'cost':" in output and "learned: cost -" in output
    assert "steerlab_inference_generated_tokens_total" in output
    assert "the platform has been stopped" in output
    assert (f"--auth {auth}" in output) and (("made API key" in output) == (auth == "keys"))
    demo_server = "steerlab.cli up .*demo-platform"
    leftovers = subprocess.run(["pgrep", "-f", demo_server], capture_output=True, text=True)
    assert leftovers.stdout == "", f"steerlab up still running: {leftovers.stdout}"
