"""Throughput (tokens/s), MFU and peak memory of an unlearning step: the pipeline's loop vs a naive HF loop.

    .venv/bin/python bench/train_throughput.py                                   # CPU: the tiny config
    .venv/bin/python bench/train_throughput.py --config 1b --batch-size 8 --answer-words 200   # a GPU, full + LoRA
    .venv/bin/python bench/train_throughput.py --config 8b --modes lora --methods npo --no-naive   # memory of 8B LoRA NPO

Both loops train the same random-init Llama (speed does not depend on what the weights know) on the same
synthetic forget/retain batches, GradDiff or NPO, LoRA or full weights:
- ours: `UnlearningLoop.step()`, the code the pipeline runs (on CUDA: bf16 LoRA base / float32 full weights
  under bf16 autocast, SDPA attention, fused AdamW, NPO's cached θ₀ log-probs; `--compile`, `--buckets`,
  `--checkpointing`, `--padding-free`, `--attention` set the RunnerOptions);
- naive: the textbook Hugging Face loop, float32 weights, eager attention, no autocast, `model(**batch).loss`,
  default AdamW, θ₀ recomputed every step for NPO (the adapter disabled for LoRA, a second copy for full).
Tokens are the non-padding tokens of every batch a step trains on; both loops see the same ones, so the
speed-up is the ratio of step times. MFU = model FLOPs per token x tokens/s / the device's peak bf16 FLOP/s,
with 6N FLOPs per token for a full step and 4N for LoRA (no weight gradients for the frozen base), N the
parameter count, plus the attention term 12 x layers x hidden x sequence (x 2/3 for LoRA); CPUs have no
peak in the table, so MFU is reported for GPUs only. `--warmup` steps are run first and not timed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from dagster_project.core.methods.runner import ATTENTION, RunnerOptions, UnlearningLoop
from dagster_project.core.model.anatomy import lora_config
from dagster_project.core.model.text import collate_pairs
from dagster_project.core.model.tiny_llama import train_tokenizer, training_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402  (bench/ is a folder of scripts, not a package)

TITLE = "Unlearning step throughput vs a naive Hugging Face loop (bench/train_throughput.py)"
# Llama shapes: the embedded default, SmolLM2-135M, Llama-3.2-1B, Llama-3.1-8B
CONFIGS = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=688, vocab_size=1500, tie_word_embeddings=True),
    "135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
WORDS = ("alder birch cedar delta ember fjord grove harbor inlet juniper kestrel lagoon meadow north orchard "
         "pine quarry ridge summit thicket upland valley willow yarrow zephyr").split()


def synthetic_records(count: int, answer_words: int, seed: int) -> list[dict]:
    """QA records of random words, answers of `answer_words` ± 25 % words (padding varies as with real data)."""
    rng = random.Random(seed)
    return [{"train_questions": [" ".join(rng.choices(WORDS, k=12)) + "?"],
             "answer": " ".join(rng.choices(WORDS, k=rng.randint(answer_words * 3 // 4, answer_words * 5 // 4)))}
            for _ in range(count)]


def save_random_llama(config_name: str, records: list[dict], model_dir: Path) -> tuple[Any, LlamaConfig, int]:
    """A random-init Llama of shape `config_name` (bf16 on CUDA) and a tokenizer trained on `records`, saved to
    `model_dir`; returns (tokenizer, config, parameter count)."""
    tokenizer = train_tokenizer([t for r in records for t in (r["answer"], *r["train_questions"])], 400, model_dir)
    config = LlamaConfig(**CONFIGS[config_name], max_position_embeddings=4096, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(training_device()):
        model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16 if torch.cuda.is_available() else torch.float32).save_pretrained(model_dir)
    return tokenizer, config, parameters


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def flops_per_token(config: LlamaConfig, parameters: int, mode: str, sequence: float) -> float:
    passes = 6 if mode == "full" else 4
    return passes * parameters + passes * 2 * config.num_hidden_layers * config.hidden_size * sequence


class NaiveLoop:
    """The textbook loop: float32, eager attention, HF's own loss, default AdamW, nothing cached."""

    def __init__(self, model_dir: Path, tokenizer, forget: list[dict], retain: list[dict], method: str, mode: str,
                 batch_size: int) -> None:
        self.device, self.tokenizer, self.method, self.mode = training_device(), tokenizer, method, mode
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager").to(self.device)
        if mode == "lora":
            self.model = get_peft_model(self.model, lora_config(self.model, r=8, alpha=16))
        elif method == "npo":
            self.reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                                  attn_implementation="eager").to(self.device).eval()
        self.optimiser = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-5)
        self.pairs = {name: [(r["train_questions"][0], r["answer"]) for r in records]
                      for name, records in (("forget", forget), ("retain", retain))}
        self.batch_size, self.cursor, self.tokens = batch_size, 0, 0

    def _batch(self, name: str) -> dict[str, torch.Tensor]:
        pairs = [self.pairs[name][(self.cursor + i) % len(self.pairs[name])] for i in range(self.batch_size)]
        batch = collate_pairs(self.tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
        self.tokens += int(batch["attention_mask"].sum())
        return {k: v.to(self.device) for k, v in batch.items()}

    def _logprob(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * (labels != -100)).sum(-1)

    def step(self) -> None:
        forget, retain = self._batch("forget"), self._batch("retain")
        self.cursor += self.batch_size
        retain_loss = self.model(**retain).loss
        if self.method == "npo":
            with torch.no_grad():
                if self.mode == "lora":
                    with self.model.disable_adapter():
                        reference = self._logprob(self.model, forget)
                else:
                    reference = self._logprob(self.reference, forget)
            ratio = self._logprob(self.model, forget) - reference
            forget_loss = -(2 / 0.1) * torch.nn.functional.logsigmoid(-0.1 * ratio).mean()
        else:
            forget_loss = -self.model(**forget).loss
        (forget_loss + retain_loss).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimiser.step()
        self.optimiser.zero_grad()


def timed(loop, steps: int, warmup: int) -> tuple[float, float]:
    """(tokens/s, peak GPU memory in GB or nan) over `steps` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        loop.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tokens_before, started = loop.tokens, time.perf_counter()
    for _ in range(steps):
        loop.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")
    return (loop.tokens - tokens_before) / seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(CONFIGS), default="tiny")
    parser.add_argument("--methods", nargs="+", default=["graddiff", "npo"], choices=["graddiff", "npo"])
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--batch-size", type=int, default=16, help="forget and retain pairs per step, each")
    parser.add_argument("--answer-words", type=int, default=20, help="mean answer length in words")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--compile", action="store_true", help="RunnerOptions.compile for our loop")
    parser.add_argument("--buckets", type=int, default=4, help="RunnerOptions.length_buckets for our loop")
    parser.add_argument("--checkpointing", action="store_true", help="RunnerOptions.gradient_checkpointing")
    parser.add_argument("--padding-free", action="store_true", help="RunnerOptions.padding_free (packed batches)")
    parser.add_argument("--attention", choices=ATTENTION, default="sdpa",
                        help="RunnerOptions.attention for our loop (flash_attention_2: GPU, flash-attn installed)")
    parser.add_argument("--no-naive", action="store_true", help="time our loop only (e.g. memory of 8B)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    options = RunnerOptions(compile=args.compile, length_buckets=args.buckets, attention=args.attention,
                            gradient_checkpointing=args.checkpointing, padding_free=args.padding_free)
    steps_total = args.steps + args.warmup
    forget = synthetic_records(args.batch_size * steps_total, args.answer_words, seed=0)
    retain = synthetic_records(args.batch_size * steps_total * 2, args.answer_words, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, config, parameters = save_random_llama(args.config, forget + retain, Path(tmp) / "model")
        sequence = statistics.mean(len(tokenizer(r["train_questions"][0] + " " + r["answer"])["input_ids"]) + 8
                                   for r in forget[:64])
        for mode in args.modes:
            for method in args.methods:
                hyperparameters = {"steps": steps_total, "batch_size": args.batch_size, "lr": 1e-5}
                ours = UnlearningLoop(Path(tmp) / "model", tokenizer, forget, retain, method, mode, hyperparameters,
                                      options=options)
                ours_speed, ours_memory = timed(ours, args.steps, args.warmup)
                del ours
                naive_speed = float("nan")
                if not args.no_naive:
                    naive = NaiveLoop(Path(tmp) / "model", tokenizer, forget, retain, method, mode, args.batch_size)
                    naive_speed, _ = timed(naive, args.steps, args.warmup)
                    del naive
                peak = peak_flops()
                mfu = flops_per_token(config, parameters, mode, sequence) * ours_speed / peak if peak else None
                rows.append((method, mode, ours_speed, naive_speed, ours_speed / naive_speed, mfu, ours_memory))
                print(f"{method:<9} {mode:<5} ours {ours_speed:10.0f} tok/s   naive {naive_speed:10.0f} tok/s   "
                      f"ratio {ours_speed / naive_speed:.2f}x   MFU {'n/a' if mfu is None else f'{100 * mfu:.1f} %'}   "
                      f"peak memory {ours_memory:.1f} GB")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    if not args.no_write:
        table = "\n".join(f"| {m} | {mode} | {o:.0f} | {n:.0f} | {r:.2f}× | {'n/a' if u is None else f'{100 * u:.1f} %'} | "
                          f"{'n/a' if mem != mem else f'{mem:.1f}'} |" for m, mode, o, n, r, u, mem in rows)
        command = " ".join(["bench/train_throughput.py", *sys.argv[1:]])
        variant = (", padding-free" if args.padding_free else "") + (f", {args.attention}" if args.attention != "sdpa" else "")
        write_section(f"{TITLE}, config {args.config}{variant}", f".venv/bin/python {command}",
                      f"{parameters / 1e6:.1f} M parameters, {args.batch_size} forget + {args.batch_size} retain pairs "
                      f"per step (~{sequence:.0f} tokens each), {args.steps} timed steps after {args.warmup}; options "
                      f"{options}.\n\n| method | mode | ours (tokens/s) | naive HF loop (tokens/s) | speed-up | MFU | "
                      f"peak GPU memory (GB) |\n|---|---|---|---|---|---|---|\n{table}")


if __name__ == "__main__":
    main()
