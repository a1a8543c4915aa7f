"""The real-model table: GradDiff, NPO, SNAP and WAGLE + NPO on the `real` profile's fine-tuned SmolLM2.

    make real                                                  # once: the profile's corpus, target, retain models
    .venv/bin/python bench/real_table.py                       # .runs/real, LoRA, seed 0
    .venv/bin/python bench/real_table.py --root .runs/real-gpu --seeds 0 1 2

Every row trains from the profile's target model with its params `unlearn.<method>` hyper-parameters and is
evaluated like the pipeline's candidate against its retain model (core/eval/compare.run_methods, the code
`bench/methods_table.py` runs on the embedded default). All rows are LoRA runs; in the WAGLE row the
attribution pass at θ₀ picks which modules get adapters (the top `--wagle-ratio` of the attribution mass),
since LoRA cannot mask single weights. Results are cached per (method, seed) like the methods table's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dagster_project.core.eval.compare import markdown_table, run_methods
from dagster_project.core.layout import Layout, load_params
from dagster_project.core.model.base import base_model_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_readme_block, write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

TITLE = "Unlearning methods on the real model (bench/real_table.py)"
METHODS = ["graddiff", "npo", "snap"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(".runs/real"), help="the real profile's pipeline root")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, help="rows besides WAGLE + NPO")
    parser.add_argument("--wagle-ratio", type=float, default=0.95)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md and README.md alone")
    args = parser.parse_args()

    root = args.root.resolve()
    params = load_params(root)
    base = base_model_spec(params)
    if base is None:
        parser.error(f"--root {args.root}: its params.yaml names no real model (model.base or model.path); run "
                     f"`make real` (or `unlearn profile init real`) first")
    layout = Layout.from_params(root, params)
    references, runs = run_methods(layout, params, args.methods, args.seeds, "lora")
    _refs, masked = run_methods(layout, params, ["npo"], args.seeds, "lora",
                                wagle={"ratio": args.wagle_ratio, "random": False})
    runs += [dataclasses.replace(r, method=f"wagle {args.wagle_ratio:g} + npo") for r in masked]
    table = markdown_table(references, runs)
    print(table)
    if args.no_write:
        return
    corpus, train = params["corpus"], params["train"]
    command = (f".venv/bin/python bench/real_table.py --root {args.root} --seeds {' '.join(map(str, args.seeds))} "
               f"--methods {' '.join(args.methods)}")
    body = (f"Base `{base}`, request `{layout.request_id}` ({len(args.seeds)} seed(s), LoRA); "
            f"target and retain fine-tuned {train['epochs']} epochs at lr {train['lr']:g} on {corpus['n_people']} "
            f"people, {corpus['n_world_facts']} world facts, {corpus['n_real_world']} famous authors; "
            f"unlearning hyper-parameters from the profile's `unlearn:`.\n\n{table}")
    write_section(TITLE, command, body)
    write_readme_block("real-table", body, command)


if __name__ == "__main__":
    main()
