"""Correctness of the unlearning loop on this machine's device, checked before anything on it is timed.

    .venv/bin/python bench/gpu_checks.py          # CUDA when present, else the CPU (CI runs it there)
    bash bench/gpu_checks.sh                      # on a GPU machine: these checks, then the GPU benchmarks

For GradDiff, NPO and RMU, LoRA and full weights, a few `UnlearningLoop` steps on a small random Llama:
- the losses are finite and the weights the runner promises train (on CUDA: a bf16 base under LoRA, float32
  full weights under autocast);
- padding-free batches take the same steps as padded ones, with every attention kernel this machine has
  (sdpa and eager; on CUDA also flex_attention, and flash_attention_2 where flash-attn is installed), to the
  precision's tolerance (float32 on the CPU, bf16 autocast on CUDA);
- the result saves and loads back to a model whose logits are finite, and the evaluation scores it on the
  training device (finite numbers);
- two Reveal-and-Release rounds (reveal by sampling, NPO forget and retain modules, merge) run on the training
  device under UNLEARN_CUDA_DETERMINISTIC=1 (sampling relaxes it to warn-only) and save float32 finite weights;
- two identical runs (NPO/LoRA, GradDiff/full) train the same bytes: on the CPU by default; on CUDA the
  default's gap is only reported, and UNLEARN_CUDA_DETERMINISTIC=1 (`training_device`) must close it, at a
  cost in step time that is reported too.
Prints one line per check and exits 1 if any failed: the CUDA paths CI cannot run get checked in one call.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from dagster_project.core.methods.runner import RunnerOptions, UnlearningLoop, trainable_attention
from dagster_project.core.model.tiny_llama import training_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import save_random_llama, synthetic_records  # noqa: E402  (bench/ is a folder of scripts)

METHODS = ("graddiff", "npo", "rmu")


def train(model_dir: Path, tokenizer, forget: list[dict], retain: list[dict], method: str, mode: str, steps: int,
          options: RunnerOptions) -> tuple[list[dict[str, float]], UnlearningLoop, float]:
    """`steps` steps of a fresh loop: their logs, the loop, and the seconds the steps took (loading excluded)."""
    loop = UnlearningLoop(model_dir, tokenizer, forget, retain, method, mode,
                          {"steps": steps, "batch_size": 4, "lr": 1e-4}, options=options)
    started = time.perf_counter()
    logs = [loop.step() for _ in range(steps)]
    if loop.device.type == "cuda":
        torch.cuda.synchronize()
    return logs, loop, time.perf_counter() - started


def trained_weights(model_dir: Path, tokenizer, forget: list[dict], retain: list[dict], method: str, mode: str,
                    steps: int) -> tuple[dict[str, torch.Tensor], float]:
    """The trainable weights after `steps` default-option steps, and the seconds the steps took."""
    _logs, loop, seconds = train(model_dir, tokenizer, forget, retain, method, mode, steps, RunnerOptions())
    return {n: p.detach().float().cpu() for n, p in loop.model.named_parameters() if p.requires_grad}, seconds


def largest_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def promised_dtypes(loop: UnlearningLoop, mode: str) -> bool:
    """LoRA on CUDA: frozen base in bf16, adapters trainable; full: every weight float32 (master weights)."""
    trainable = [p for p in loop.model.parameters() if p.requires_grad]
    frozen = [p for p in loop.model.parameters() if not p.requires_grad]
    if mode == "full":
        return bool(trainable) and all(p.dtype == torch.float32 for p in trainable)
    base_dtype = torch.bfloat16 if loop.device.type == "cuda" else torch.float32
    return bool(trainable) and all(p.dtype == base_dtype for p in frozen)


def loads_back(out_dir: Path, model_dir: Path, mode: str, device: torch.device) -> bool:
    model = AutoModelForCausalLM.from_pretrained(out_dir if mode == "full" else model_dir).to(device)
    if mode == "lora":
        model = PeftModel.from_pretrained(model, out_dir)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]], device=device)).logits
    return bool(torch.isfinite(logits).all())


@contextmanager
def strict_determinism() -> Iterator[None]:
    """UNLEARN_CUDA_DETERMINISTIC=1 inside the block (`training_device` then turns on torch's strict mode on
    CUDA), and both off after it."""
    os.environ["UNLEARN_CUDA_DETERMINISTIC"] = "1"
    try:
        yield
    finally:
        del os.environ["UNLEARN_CUDA_DETERMINISTIC"]
        torch.use_deterministic_algorithms(False)


def strict_mode_stop(error: RuntimeError) -> str:
    """The first line of strict mode's error, which names the op that has no deterministic CUDA kernel."""
    return str(error).splitlines()[0][:300]


def scores_on_device(adapter_dir: Path, device: torch.device) -> tuple[bool, str]:
    """The evaluation on this device: an adapter merged by `load_for_eval` lands there, and scoring (losses,
    greedy answers, token statistics, the relearning attack) gives finite numbers on a few corpus people."""
    from dagster_project.core.data.corpus import CorpusConfig, generate_corpus
    from dagster_project.core.eval.report import build_eval_sets, score_model
    from dagster_project.core.eval.standalone import load_for_eval

    corpus = generate_corpus(CorpusConfig(n_people=10, n_holdout=2, n_world_facts=4, n_real_world=4))
    eval_sets = build_eval_sets(corpus, corpus.qa[:4], corpus.qa[4:12], {"retain_sample": 4, "seed": 0})
    model, tokenizer = load_for_eval(adapter_dir)
    scores = score_model(model, tokenizer, eval_sets, batch_size=8, max_new_tokens=8, relearn_steps=2)
    numbers = [float(v) for v in _leaves(scores) if isinstance(v, (int, float))]
    where = next(model.parameters()).device
    return where.type == device.type and all(map(math.isfinite, numbers)), f"{len(numbers)} numbers on {where}"


def releases_on_device(model_dir: Path, tokenizer, forget: list[dict], retain: list[dict], out_dir: Path,
                       device: torch.device) -> tuple[bool, str]:
    """Two release rounds from the random model, under strict determinism: every sampled answer is kept and no
    relevance stops the rounds, so both re-reveal and train; the merged result must be float32 and finite."""
    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.reveal.release import ReleaseConfig, release
    from dagster_project.core.reveal.reveal import RevealConfig, reveal
    from dagster_project.core.reveal.scoring import hashed_ngram_encoder

    subjects, encode = [" ".join(forget[0]["answer"].split()[:2])], hashed_ngram_encoder()
    reveal_config = RevealConfig(rounds=4, samples=4, max_new_tokens=12, relevance_threshold=0.0)
    with strict_determinism():
        model, _tokenizer = load_for_eval(model_dir)  # as the pipeline's first reveal loads the target
        first = reveal(model, tokenizer, subjects, reveal_config, encode, progress=False)
        del model
        config = ReleaseConfig(rounds=2, steps=2, batch_size=4, stop_relevance=-1.0)
        result = release(model_dir, tokenizer, subjects, first, retain[:8], "npo", config, reveal_config, encode,
                         out_dir, out_dir.with_name("release-data"))
    weights = list(AutoModelForCausalLM.from_pretrained(out_dir).parameters())
    losses = [v for round_ in result["rounds"] for k, v in round_.items() if k.startswith("final_")]
    ok = (result["rounds_done"] == 2 and result["device"] == device.type and all(map(math.isfinite, losses))
          and all(w.dtype == torch.float32 and bool(torch.isfinite(w).all()) for w in weights))
    return ok, f"{result['rounds_done']} rounds on {result['device']}, {len(losses)} finite losses, {result['seconds']:.1f} s"


def _leaves(tree):
    """Every value of nested dicts and lists."""
    children = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else None
    if children is None:
        yield tree
        return
    for child in children:
        yield from _leaves(child)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="model shape from bench/train_throughput.py's CONFIGS")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()

    device = training_device()
    # bf16 autocast on CUDA rounds differently when the batch layout changes; float32 on the CPU does not
    tolerance = 3e-2 if device.type == "cuda" else 1e-4
    forget, retain = synthetic_records(64, 12, seed=0), synthetic_records(64, 12, seed=1)
    failures = 0

    def report(name: str, ok: bool | None, detail: str = "") -> None:  # ok None: a figure, not a check
        nonlocal failures
        failures += ok is False
        print(f"{'note' if ok is None else 'ok  ' if ok else 'FAIL'} {name}{f'  ({detail})' if detail else ''}",
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        tokenizer, _config, parameters = save_random_llama(args.config, forget + retain, model_dir)
        print(f"device {device}, config {args.config} ({parameters / 1e6:.1f} M parameters), kernels "
              f"{trainable_attention(device)}", flush=True)
        for mode in ("lora", "full"):
            for method in args.methods:
                name = f"{method}/{mode}"
                padded, loop, _ = train(model_dir, tokenizer, forget, retain, method, mode, args.steps, RunnerOptions())
                finite = all(math.isfinite(v) for logs in padded for v in logs.values())
                report(f"{name} finite losses", finite, f"forget_nll {padded[-1]['forget_nll']:.3f}")
                report(f"{name} weight dtypes", promised_dtypes(loop, mode))
                out_dir = Path(tmp) / f"{method}-{mode}"
                loop.save(out_dir)
                del loop
                report(f"{name} saves and loads back", loads_back(out_dir, model_dir, mode, device))
                for attention in trainable_attention(device):
                    packed, loop, _ = train(model_dir, tokenizer, forget, retain, method, mode, args.steps,
                                         RunnerOptions(attention=attention, padding_free=True))
                    del loop
                    gap = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for a, b in zip(padded, packed) for k in a)
                    report(f"{name} padding-free with {attention} takes the padded steps", gap <= tolerance,
                           f"largest relative gap in the logs {gap:.1e}, tolerance {tolerance:.0e}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        for mode, method in (("lora", "npo"), ("full", "graddiff")):
            method = method if method in args.methods else args.methods[0]
            run = (model_dir, tokenizer, forget, retain, method, mode, args.steps)
            (first, seconds), (second, _) = trained_weights(*run), trained_weights(*run)
            gap = largest_gap(first, second)
            name = f"{method}/{mode} twice"
            if device.type != "cuda":
                report(f"{name} trains the same bytes", gap == 0.0, f"largest weight difference {gap:.1e}")
                continue
            report(f"{name} by default", None, f"largest weight difference {gap:.1e}")
            try:
                with strict_determinism():
                    (first, strict_seconds), (second, _) = trained_weights(*run), trained_weights(*run)
                gap = largest_gap(first, second)
                report(f"{name} with UNLEARN_CUDA_DETERMINISTIC=1 trains the same bytes", gap == 0.0,
                       f"largest weight difference {gap:.1e}; steps {strict_seconds / seconds:.2f}x the default's time")
            except RuntimeError as error:
                report(f"{name} with UNLEARN_CUDA_DETERMINISTIC=1 runs", False, strict_mode_stop(error))
        ok, detail = scores_on_device(Path(tmp) / f"{args.methods[0]}-lora", device)
        report("evaluation scores an unlearned adapter on the training device", ok, detail)
        try:
            ok, detail = releases_on_device(model_dir, tokenizer, forget, retain, Path(tmp) / "release", device)
        except RuntimeError as error:
            ok, detail = False, strict_mode_stop(error)
        report("release rounds run on the training device under strict determinism", ok, detail)
    print(f"{failures} check(s) failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
