"""The GPU course benchmark must keep working where CI runs (a CPU): a smoke run at ci sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_course_runs_every_stage_and_prints_the_figures(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_course.py"), "--profile", "ci",
         "--device", "cpu", "--num-samples", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for stage in ("vqvae", "prior", "samples", "analysis", "report"):
        assert any(line.startswith(f"| {stage} | ") for line in lines), stage
    assert any("train images/s" in line for line in lines)
    assert any(line.startswith("prior: test NLL") and "bits per code" in line for line in lines)
    assert any(line.startswith("total: ") for line in lines)
    assert (out / "report.md").is_file()  # the run it measured is the real pipeline's
