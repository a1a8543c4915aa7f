"""Cost of WAGLE's weight attribution as a ratio to one training epoch of the same method (target ≤ 1.0×).

    make demo                                   # once: target model and the request's datasets
    .venv/bin/python bench/wagle_cost.py        # graddiff and npo, full mode; updates BENCHMARKS.md
    .venv/bin/python bench/wagle_cost.py --methods npo --no-write

Attribution is the pipeline's own `wagle_attribution` (one gradient pass at θ₀ over the forget pairs and
an equally large rescaled sample of the retain pairs), timed without its cache and including its model
load, hashing and mask writing; an epoch is as many optimiser steps of `run_unlearning` as it takes to see
every forget pair once, with the method's params.yaml settings (the training loop only). Each is run once
untimed first, so neither pays the process's one-off start-up (thread pools, allocator: ~0.6 s on the
first backward pass), then timed `--repeats` times; the table holds medians.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dagster_project.core.data.io import read_jsonl
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.methods.runner import run_unlearning, training_pairs
from dagster_project.core.model.tiny_llama import load_tokenizer
from dagster_project.core.stages import unlearning_retain_records, wagle_attribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
TITLE = "WAGLE attribution cost (bench/wagle_cost.py)"


def median_of_warm_runs(timed: Callable[[], float], repeats: int) -> float:
    """Median of `repeats` timings of `timed()` after one untimed warm-up call."""
    timed()
    return statistics.median(timed() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["graddiff", "npo"])
    parser.add_argument("--ratio", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    params = load_params(ROOT)
    layout = Layout.from_params(ROOT, params)
    forget, retain = read_jsonl(layout.forget_set), unlearning_retain_records(layout)
    tokenizer = load_tokenizer(layout.tokenizer_dir)
    spec = {"ratio": args.ratio, "mu": 1e-6, "random": False}
    with tempfile.TemporaryDirectory() as tmp:
        def attribute() -> float:
            started = time.perf_counter()
            wagle_attribution(layout, params, spec, Path(tmp) / "attribution", use_cache=False)
            return time.perf_counter() - started

        attribution = median_of_warm_runs(attribute, args.repeats)
        rows = []
        for method in args.methods:
            hyperparameters = dict(params["unlearn"].get(method) or {})
            batch_size = hyperparameters.get("batch_size", 16)
            steps = math.ceil(len(training_pairs(forget)) / batch_size)

            def epoch(method: str = method, hyperparameters: dict = hyperparameters, steps: int = steps) -> float:
                return run_unlearning(layout.target_model_dir, tokenizer, forget, retain, method, "full",
                                      {**hyperparameters, "steps": steps, "lr": 1e-6}, Path(tmp) / method)["seconds"]

            seconds = median_of_warm_runs(epoch, args.repeats)
            rows.append((method, steps, seconds, attribution / seconds))
            print(f"{method:<10} epoch ({steps} steps) {seconds:6.2f} s   attribution {attribution:6.2f} s   "
                  f"ratio {attribution / seconds:.2f}x")
    if not args.no_write:
        table = "\n".join(f"| {m} | {n} | {e:.2f} | {attribution:.2f} | {r:.2f}× |" for m, n, e, r in rows)
        write_section(TITLE, f".venv/bin/python bench/wagle_cost.py --methods {' '.join(args.methods)} --ratio {args.ratio} "
                      f"--repeats {args.repeats}",
                      f"Request `{layout.request_id}`, full-weight mode; medians of {args.repeats} warm runs each "
                      f"(attribution: the whole stage, model load to mask file; epoch: the training loop).\n\n| method | steps in one epoch | epoch (s) | "
                      f"attribution (s) | attribution / epoch |\n|---|---|---|---|---|\n{table}")


if __name__ == "__main__":
    main()
