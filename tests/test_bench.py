"""The benchmark scripts run (tiny sizes) so CI keeps them working; their figures live in BENCHMARKS.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_eval_speed_bench_prints_ratios(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/eval_speed.py", "--items", "4", "--batch-size", "4", "--max-new-tokens", "3", "--no-write"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=True,
    )
    lines = [line for line in result.stdout.splitlines() if "ratio" in line]
    assert len(lines) == 2 and all(float(line.rsplit("ratio", 1)[1].strip().rstrip("x")) > 0 for line in lines)


def test_method_speed_bench_prints_ratio_to_graddiff(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/method_speed.py", "--methods", "npo", "--modes", "lora", "--steps", "2",
         "--batch-size", "2", "--no-write"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=True,
    )
    ratios = {line.split()[0]: float(line.rsplit("ratio to graddiff", 1)[1].strip().rstrip("x"))
              for line in result.stdout.splitlines() if "ratio to graddiff" in line}
    assert set(ratios) == {"graddiff", "npo"} and ratios["graddiff"] == 1.0 and ratios["npo"] > 0



def test_wagle_cost_bench_prints_a_ratio_per_method(micro_root: Path, repo_root: Path, one_thread) -> None:
    """On the micro pipeline's artifacts (`--root`): the bench needs a target model and a request's datasets."""
    from conftest import materialize_request

    assert materialize_request(micro_root, "micro").success
    result = subprocess.run(
        [sys.executable, "bench/wagle_cost.py", "--root", str(micro_root), "--methods", "graddiff", "npo",
         "--repeats", "1", "--no-write"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=True,
    )
    ratios = {line.split()[0]: float(line.split("ratio", 1)[1].split("x")[0])
              for line in result.stdout.splitlines() if " ratio " in line}
    assert set(ratios) == {"graddiff", "npo"} and all(r > 0 for r in ratios.values())
    assert "whole attribution stage" in result.stdout


@pytest.mark.parametrize("options", [[], ["--padding-free", "--buckets", "1"]])
def test_train_throughput_bench_compares_both_loops_on_the_cpu(repo_root: Path, options: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "bench/train_throughput.py", "--steps", "1", "--warmup", "1", "--batch-size", "2",
         "--answer-words", "6", "--methods", "graddiff", "npo", "--modes", "lora", "--no-write", *options],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [line.split() for line in result.stdout.splitlines() if " ratio " in line]
    assert [row[:2] for row in rows] == [["graddiff", "lora"], ["npo", "lora"]]
    assert all(float(row[3]) > 0 and float(row[6]) > 0 and "MFU n/a" in " ".join(row) for row in rows)


def test_gpu_session_script_rehearses_on_the_cpu(repo_root: Path, tmp_path: Path) -> None:
    """bench/gpu_checks.sh is what a short GPU lease runs, once: its --smoke rehearsal takes every step with the
    same flags on the tiny config, so a broken flag or import shows here, not on the GPU."""
    benchmarks = (repo_root / "BENCHMARKS.md").read_bytes()
    result = subprocess.run(["bash", "bench/gpu_checks.sh", "--smoke"], cwd=repo_root, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed with exit code" not in result.stdout
    logs = {path.name: path.read_text() for path in tmp_path.glob("*.log")}
    assert set(logs) == {"machine.log", "throughput-1b.log", "memory-8b.log", "checks.log", "throughput-1b-packed.log"}
    assert len([line for line in logs["throughput-1b.log"].splitlines() if " ratio " in line]) == 4  # GD/NPO x LoRA/full
    checks = [line for line in logs["checks.log"].splitlines() if line.startswith(("ok  ", "FAIL"))]
    # NPO x LoRA/full: 3 + 2 kernels, then twice the same run each (NPO stands in for GradDiff under --methods npo),
    # then the evaluation of the NPO adapter and two release rounds
    assert len(checks) == 14 and all(line.startswith("ok") for line in checks)
    assert "padding-free with eager takes the padded steps" in logs["checks.log"]
    assert "npo/full twice trains the same bytes  (largest weight difference 0.0e+00)" in logs["checks.log"]
    assert "numbers on cpu)" in logs["checks.log"]
    assert "(2 rounds on cpu, 6 finite losses" in logs["checks.log"]
    assert (tmp_path / "BENCHMARKS.md").read_bytes() == benchmarks == (repo_root / "BENCHMARKS.md").read_bytes()
