"""Cost of WAGLE's weight attribution as a ratio to one training epoch of the same method (target ≤ 1.0×).

    make demo                                   # once: target model and the request's datasets
    .venv/bin/python bench/wagle_cost.py        # graddiff and npo, full mode; updates BENCHMARKS.md
    .venv/bin/python bench/wagle_cost.py --methods npo --no-write

Like for like, compute only: attribution is `attribute` (the pipeline's gradient passes at θ₀ over the
forget pairs and an equally large rescaled retain sample, scores, the global top-ratio mask and the LoRA
targets) on a model already in memory; an epoch is the training loop of `run_unlearning` (the `seconds`
it reports, model load excluded) for as many optimiser steps as it takes to see every forget pair once,
with the method's params.yaml settings. Both run once untimed first (thread pools, allocator: ~0.6 s on
the first backward pass), then in alternation, `--repeats` rounds of attribution followed by one epoch of
each method, so a slow spell of a shared machine hits both sides of a ratio; the table holds medians of
the per-round ratios. The whole attribution stage (model load, hashing, mask file) is timed once beside.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM

from dagster_project.core.attribution import attribute
from dagster_project.core.data.io import read_jsonl
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.methods.runner import run_unlearning, training_pairs
from dagster_project.core.model.tiny_llama import load_tokenizer
from dagster_project.core.stages import unlearning_retain_records, wagle_attribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
TITLE = "WAGLE attribution cost (bench/wagle_cost.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["graddiff", "npo"])
    parser.add_argument("--ratio", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; medians are reported")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="pipeline root whose params.yaml request, target model and datasets to use")
    args = parser.parse_args()

    params = load_params(args.root)
    layout = Layout.from_params(args.root, params)
    forget, retain = read_jsonl(layout.forget_set), unlearning_retain_records(layout, params)
    forget_pairs, retain_pairs = training_pairs(forget), training_pairs(retain)
    tokenizer = load_tokenizer(layout.tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(layout.target_model_dir)

    def attribution() -> float:
        started = time.perf_counter()
        attribute(model, tokenizer, forget_pairs, retain_pairs, args.ratio, batch_size=params["eval"]["batch_size"])
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        def epoch(method: str) -> float:
            hyperparameters = dict(params["unlearn"].get(method) or {})
            steps = math.ceil(len(forget_pairs) / hyperparameters.get("batch_size", 16))
            return run_unlearning(layout.target_model_dir, tokenizer, forget, retain, method, "full",
                                  {**hyperparameters, "steps": steps, "lr": 1e-6}, Path(tmp) / method)["seconds"]

        attribution(), [epoch(m) for m in args.methods]  # warm-up, untimed
        rounds = []
        for _ in range(args.repeats):
            seconds = attribution()
            rounds.append((seconds, {m: epoch(m) for m in args.methods}))
        started = time.perf_counter()
        wagle_attribution(layout, params, {"ratio": args.ratio, "mu": 1e-6, "random": False}, Path(tmp) / "stage",
                          use_cache=False)
        stage = time.perf_counter() - started

    attribution_median = statistics.median(a for a, _ in rounds)
    rows = []
    for method in args.methods:
        steps = math.ceil(len(forget_pairs) / (params["unlearn"].get(method) or {}).get("batch_size", 16))
        epoch_median = statistics.median(e[method] for _, e in rounds)
        ratios = sorted(a / e[method] for a, e in rounds)
        rows.append((method, steps, epoch_median, statistics.median(ratios), ratios[0], ratios[-1]))
        print(f"{method:<10} epoch ({steps} steps) {epoch_median:6.2f} s   attribution {attribution_median:6.2f} s   "
              f"ratio {rows[-1][3]:.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"whole attribution stage (model load, hashing, mask file): {stage:.2f} s")
    if not args.no_write:
        table = "\n".join(f"| {m} | {n} | {e:.2f} | {attribution_median:.2f} | {r:.2f}× | {lo:.2f}–{hi:.2f} |"
                          for m, n, e, r, lo, hi in rows)
        write_section(TITLE, f".venv/bin/python bench/wagle_cost.py --methods {' '.join(args.methods)} --ratio {args.ratio} "
                      f"--repeats {args.repeats}",
                      f"Request `{layout.request_id}`, full-weight mode, compute only on both sides (attribution: "
                      f"gradient passes, scores, mask and LoRA targets on a loaded model; epoch: the training loop); "
                      f"{args.repeats} alternating rounds, medians.\n\n| method | steps in one epoch | epoch (s) | "
                      f"attribution (s) | attribution / epoch | range over rounds |\n|---|---|---|---|---|---|\n{table}\n\n"
                      f"The whole attribution stage (model load, hashing, mask file, copy into the store) took "
                      f"{stage:.2f} s once.")


if __name__ == "__main__":
    main()
