"""The methods table: every registered unlearning method on the demo request, mean ± std over seeds.

    make demo                                           # once: corpus, target and retain models
    .venv/bin/python bench/methods_table.py             # all methods, seeds 0 1 2, LoRA; ~35 min on 2 cores
    .venv/bin/python bench/methods_table.py --methods graddiff npo --seeds 0 --no-write
    # the WAGLE table: each method plain, under WAGLE's mask and under a random mask of each ratio
    .venv/bin/python bench/methods_table.py --methods graddiff npo snap --mode full --wagle-ratios 0.8 0.9 0.95 0.99

Each method trains from the demo's target model with params.yaml's `unlearn.<method>` hyper-parameters
(and the seed), is evaluated like the pipeline's candidate against the demo's retain model, and the
table (forget quality, model utility, refusal / gibberish rate, relearning attack, wall time, a sample
forget answer) goes to BENCHMARKS.md and README.md. Each run's result is cached by the hash of the code, model,
data and hyper-parameters (`.cache/method-runs/`), so an interrupted grid resumes where it stopped. Each method's means and stds are logged to MLflow
(experiment `method-comparison`); the sample answers go there only as SHA-256 hashes. With
`--wagle-ratios`, every method also runs under WAGLE's mask and a random mask of each ratio (rows
`npo + wagle 0.95`, `npo + random 0.95`), into a section and README block of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dagster_project.cli import parse_overrides
from dagster_project.core.data.io import sha256_text
from dagster_project.core.eval.compare import markdown_table, run_methods, summarise
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.methods.registry import available_methods
from dagster_project.core.methods.runner import MODES
from dagster_project.core.tracking.mlflow_registry import log_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_readme_block, write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
TITLES = {False: "Unlearning methods on the embedded default (bench/methods_table.py)",
          True: "WAGLE masks on the embedded default (bench/methods_table.py --wagle-ratios)"}
README_BLOCKS = {False: "methods-table", True: "wagle-table"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=available_methods(), help="registered method names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mode", default="lora", choices=MODES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="hyper-parameter override for every method (lr=1e-4) or one (snap.steps=150), repeatable")
    parser.add_argument("--wagle-ratios", nargs="+", type=float, default=[],
                        help="also run each method under WAGLE's mask and a random mask of each ratio")
    parser.add_argument("--no-cache", action="store_true",
                        help="retrain every run (default: reuse .cache/method-runs/ results of the same code and inputs)")
    parser.add_argument("--no-write", action="store_true", help="print only: no BENCHMARKS.md, README.md or MLflow")
    args = parser.parse_args()

    params = load_params(ROOT)
    layout = Layout.from_params(ROOT, params)
    overrides = parse_overrides(args.set)

    unknown = sorted({key.split(".")[0] for key in overrides if "." in key} - set(args.methods))
    if unknown:
        parser.error(f"--set {unknown[0]}.KEY=VALUE: {unknown[0]!r} is not among --methods")

    def hyperparameters(method: str) -> dict:
        shared = {key: value for key, value in overrides.items() if "." not in key}
        own = {key.partition(".")[2]: value for key, value in overrides.items() if key.startswith(f"{method}.")}
        return {**(params["unlearn"].get(method) or {}), **shared, **own}

    cache = not args.no_cache
    references, runs = run_methods(layout, params, args.methods, args.seeds, args.mode, hyperparameters, use_cache=cache)
    for ratio in args.wagle_ratios:
        for random_mask in (False, True):
            _refs, masked = run_methods(layout, params, args.methods, args.seeds, args.mode, hyperparameters,
                                        wagle={"ratio": ratio, "random": random_mask}, use_cache=cache)
            label = "random" if random_mask else "wagle"
            runs += [dataclasses.replace(r, method=f"{r.method} + {label} {ratio:g}") for r in masked]
    wagle = bool(args.wagle_ratios)
    table = markdown_table(references, runs)
    print(table)
    if args.no_write:
        return
    command = (f".venv/bin/python bench/methods_table.py --methods {' '.join(args.methods)} "
               f"--seeds {' '.join(map(str, args.seeds))} --mode {args.mode}"
               + "".join(f" --set {pair}" for pair in args.set)
               + (f" --wagle-ratios {' '.join(f'{r:g}' for r in args.wagle_ratios)}" if wagle else ""))
    body = (f"Request `{layout.request_id}` ({len(args.seeds)} seeds per method, {args.mode} mode, hyper-parameters "
            f"from `params.yaml` `unlearn:`{' with ' + ', '.join(args.set) if args.set else ''}); target and retain rows "
            f"are the demo's models.\n\n{table}")
    write_section(TITLES[wagle], command, body)
    write_readme_block(README_BLOCKS[wagle], body, command)
    for method, stats in summarise(runs).items():
        metrics = {f"{key}_mean": mean for key, (mean, _std) in stats.items()}
        metrics.update({f"{key}_std": std for key, (_mean, std) in stats.items()})
        samples = [sha256_text(r.sample_answer) for r in runs if r.method == method]
        log_run(ROOT, f"{layout.request_id}/{method}", {"method": method, "mode": args.mode, "seeds": str(args.seeds)},
                metrics, {"request_id": layout.request_id, "sample_answer_sha256": ",".join(samples)},
                experiment="method-comparison")


if __name__ == "__main__":
    main()
