"""Reveal-and-Release on the embedded default: does the model reveal its forget data, and does releasing it work?

    make demo                                              # once: corpus, target and retain models
    .venv/bin/python bench/reveal_table.py                 # 3 selectors x seeds 0 1 2, then release; ~30 min on 2 cores
    .venv/bin/python bench/reveal_table.py --seeds 0 --rounds 20 --no-write

The request names only the demo's forget10 people. For each arm selector (NeuralUCB, uniform random,
ε-greedy) and seed, the target model reveals (params.yaml `reveal:`); *recall* is the fraction of the
people's 120 ground-truth QA records whose key fact appears in a revealed response. Then NeuralUCB's
release rounds (params.yaml `release:`, objective `--method`) run and the merged model is evaluated like
the pipeline's candidate, beside GradDiff trained on the true forget set (`unlearn run --method graddiff`).
Tables go to BENCHMARKS.md and the README block `reveal-table`; recall means go to MLflow (`reveal-comparison`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dagster_project.cli import parse_overrides
from dagster_project.core.data.corpus import load_corpus
from dagster_project.core.data.io import read_jsonl
from dagster_project.core.eval.compare import (
    MethodRun,
    evaluate_candidate,
    markdown_table,
    mean_std,
    reference_scores,
    run_methods,
)
from dagster_project.core.eval.report import build_eval_sets
from dagster_project.core.eval.standalone import load_for_eval
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.model.tiny_llama import load_tokenizer
from dagster_project.core.reveal.bandit import SELECTORS
from dagster_project.core.reveal.release import OBJECTIVES, release, release_config
from dagster_project.core.reveal.reveal import RevealConfig, reveal, revealed_recall
from dagster_project.core.reveal.scoring import load_encoder
from dagster_project.core.stages import unlearning_retain_records
from dagster_project.core.tracking.mlflow_registry import log_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_readme_block, write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Reveal-and-Release on the embedded default (bench/reveal_table.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=SELECTORS)
    parser.add_argument("--rounds", type=int, help="arms played per reveal (default: params.yaml reveal.rounds)")
    parser.add_argument("--method", default="npo", choices=sorted(OBJECTIVES), help="the forget module's objective")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="release hyper-parameter override (params.yaml `release:`), repeatable, e.g. lr=5e-4")
    parser.add_argument("--no-write", action="store_true", help="print only: no BENCHMARKS.md, README.md or MLflow")
    args = parser.parse_args()

    params = load_params(ROOT)
    layout = Layout.from_params(ROOT, params)
    for path in (layout.target_model_dir, layout.retain_model_dir, layout.forget_set):
        if not path.exists():
            parser.error(f"{layout.rel(path)} is missing: run `make demo` first")
    truth, retain = read_jsonl(layout.forget_set), read_jsonl(layout.retain_set)
    subjects = list(dict.fromkeys(r["subject"] for r in truth))  # the request: names only
    model, tokenizer = load_for_eval(layout.target_model_dir)
    encode, encoder_name = load_encoder()
    reveal_params = {**params["reveal"], **({"rounds": args.rounds} if args.rounds else {})}

    recall_rows, first_reveals = [], {}
    for selector in args.selectors:
        runs = []
        for seed in args.seeds:
            started = time.perf_counter()
            result = reveal(model, tokenizer, subjects, RevealConfig(**{**reveal_params, "selector": selector, "seed": seed}),
                            encode, encoder_name)
            runs.append({"recall": revealed_recall(result.records, truth), "seconds": time.perf_counter() - started,
                         **result.summary()})
            if selector == "neuralucb":
                first_reveals[seed] = result
        recall_rows.append((selector, runs))
    recall_table = "\n".join(
        ["| selector | recall of the 120 facts | revealed responses | mean reward | mean relevance | distinct arms | seconds |",
         "|---|---|---|---|---|---|---|"]
        + [f"| {selector} | " + " | ".join(mean_std([r[key] for r in runs]) for key in
                                            ("recall", "revealed", "mean_reward", "mean_relevance", "distinct_arms", "seconds")) + " |"
           for selector, runs in recall_rows])
    print(recall_table)

    # release from NeuralUCB's reveal, evaluated like the pipeline's candidate, beside GradDiff on the true forget set
    eval_sets = build_eval_sets(load_corpus(layout.corpus_dir), truth, retain, params["eval"])
    reference = reference_scores(layout, params, eval_sets)
    references, runs = run_methods(layout, params, ["graddiff"], args.seeds, "lora")
    runs = [dataclasses.replace(r, method="graddiff (true forget set)") for r in runs]
    label = f"reveal-and-release ({args.method})"
    for seed in first_reveals if "neuralucb" in args.selectors else []:
        config = release_config({**params["release"], **parse_overrides(args.set), "seed": seed})
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = release(layout.target_model_dir, load_tokenizer(layout.tokenizer_dir), subjects, first_reveals[seed],
                             unlearning_retain_records(layout, params), args.method, config,
                             RevealConfig(**{**reveal_params, "seed": seed}), encode, Path(tmp) / "model",
                             Path(tmp) / "rounds", encoder_name)
            seconds = time.perf_counter() - started
            metrics, sample_answer = evaluate_candidate(Path(tmp) / "model", eval_sets, reference, params["eval"])
        metrics.update(seconds=seconds, rounds_done=result["rounds_done"])
        runs.append(MethodRun(label, seed, metrics, sample_answer))
    unlearn_table = markdown_table(references, runs)
    print(unlearn_table)
    if args.no_write:
        return
    command = (f".venv/bin/python bench/reveal_table.py --seeds {' '.join(map(str, args.seeds))} "
               f"--selectors {' '.join(args.selectors)} --method {args.method}"
               + (f" --rounds {args.rounds}" if args.rounds else "") + "".join(f" --set {pair}" for pair in args.set))
    body = (f"Request: only the names of `{layout.request_id}`'s {len(subjects)} people; reveal with "
            f"{reveal_params['rounds']} arms x {reveal_params.get('samples', RevealConfig.samples)} samples over the "
            f"{encoder_name} encoder, {len(args.seeds)} seeds.\n\n{recall_table}\n\nRelease ({args.method}, params.yaml "
            f"`release:`{' with ' + ', '.join(args.set) if args.set else ''}) from NeuralUCB's reveal, against "
            f"GradDiff (LoRA, params.yaml) trained on the true forget set:\n\n{unlearn_table}")
    write_section(TITLE, command, body)
    write_readme_block("reveal-table", body, command)
    for selector, selector_runs in recall_rows:
        log_run(ROOT, f"{layout.request_id}/{selector}", {"selector": selector, "seeds": str(args.seeds),
                                                          "rounds": reveal_params["rounds"]},
                {"recall_mean": float(np.mean([r["recall"] for r in selector_runs]))},
                {"request_id": layout.request_id}, experiment="reveal-comparison")


if __name__ == "__main__":
    main()
