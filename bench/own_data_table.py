"""The worked examples' tables: methods on a request on your own data, mean ± std over seeds, with the targets.

    make example-tickets example-knowledge              # once: each example's root under .runs/
    .venv/bin/python bench/own_data_table.py            # both examples, npo simnpo graddiff, seeds 0 1 2
    .venv/bin/python bench/own_data_table.py --examples support-tickets --methods simnpo --seeds 0 --no-write

Each method trains from the example's target model with its params.yaml `unlearn.<method>` settings (and the
seed), exactly as the pipeline's unlearning stage does, and is scored by the same documents evaluation as its
candidate (eval/documents.py): knowledge probes against the target, MIA against the non-member source,
prompts about the subject, the relearning attack. The table, and a line per method on the worked examples' targets
(forget-probe top-1 ≤ chance + 0.10; retain and hard-positive top-1 ≥ 0.95× the target's; gibberish ≤ 5 %),
go to BENCHMARKS.md and README.md. Runs are cached like bench/methods_table.py's (`.cache/method-runs/` of
the example's root), so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dagster_project.core.eval.compare import DOCUMENT_COLUMNS, markdown_table, run_methods, summarise
from dagster_project.core.layout import Layout, load_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_readme_block, write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"support-tickets": ("Worked example (a): fine-tuned on your data (bench/own_data_table.py)",
                                "example-tickets-table", "make example-tickets"),
            "pretrained-knowledge": ("Worked example (b): pretrained knowledge (bench/own_data_table.py)",
                                     "example-knowledge-table", "make example-knowledge")}
MARGIN, KEPT, GIBBERISH = 0.10, 0.95, 0.05  # the worked examples' targets


def verdicts(target: dict[str, float], stats: dict[str, tuple[float, float]]) -> list[str]:
    """One phrase per target: met, or missed and by how much (means over seeds)."""
    forget, chance = stats["forget_probe_top1"][0], stats["probe_chance"][0]
    out = [f"forget top-1 {target['forget_probe_top1']:.2f} → {forget:.2f} "
           + ("(≤ chance + 0.10: met)" if forget <= chance + MARGIN + 1e-9 else
              f"(target ≤ {chance + MARGIN:.2f}: missed by {forget - chance - MARGIN:.2g})")]
    for key, label in (("retain_probe_top1", "retain"), ("hard_positive_probe_top1", "hard-positive"),
                       ("general_probe_top1", "general knowledge")):
        ratio = stats[key][0] / target[key] if target[key] else float("nan")
        out.append(f"{label} {target[key]:.2f} → {stats[key][0]:.2f} = {ratio:.2f}× "
                   + ("(≥ 0.95×: met)" if ratio >= KEPT - 1e-9 else f"(target ≥ 0.95×: missed by {KEPT - ratio:.2g})"))
    gibberish = stats["forget_gibberish_rate"][0]
    out.append(f"gibberish {gibberish:.0%} " + ("(≤ 5 %: met)" if gibberish <= GIBBERISH else "(target ≤ 5 %: missed)"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=list(EXAMPLES))
    parser.add_argument("--methods", nargs="+", default=["npo", "simnpo", "graddiff"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", default=str(ROOT / ".runs"), help="where the examples' roots are (make example-*)")
    parser.add_argument("--no-write", action="store_true", help="print only: no BENCHMARKS.md or README.md")
    args = parser.parse_args()
    for example in args.examples:
        root = Path(args.runs) / example
        title, block, make = EXAMPLES[example]
        if not (root / "params.yaml").exists():
            sys.exit(f"{root} does not exist: run `{make}` first")
        params = load_params(root)
        layout = Layout.from_params(root, params)
        references, runs = run_methods(layout, params, args.methods, args.seeds, "lora")
        table = markdown_table(references, runs, DOCUMENT_COLUMNS)
        lines = [f"- **{method}**: " + "; ".join(verdicts(references["target"], stats))
                 for method, stats in summarise(runs).items()]
        settings = ", ".join(f"{m}: {params['unlearn'].get(m)}" for m in args.methods)
        body = (f"Request `{layout.request_id}` of `{make}` ({len(args.seeds)} seeds per method, LoRA, the profile's "
                f"`unlearn:` settings: {settings}); the target row is the model before unlearning. Chance is "
                f"{references['target'].get('probe_chance', 0.25):.2f}.\n\n{table}\n\nAgainst the targets "
                f"(means over seeds):\n\n" + "\n".join(lines))
        print(body)
        if not args.no_write:
            command = (f".venv/bin/python bench/own_data_table.py --examples {example} --methods "
                       f"{' '.join(args.methods)} --seeds {' '.join(map(str, args.seeds))}")
            write_section(title, command, body)
            write_readme_block(block, body, command)


if __name__ == "__main__":
    main()
