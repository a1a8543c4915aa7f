"""The embedded default model: a byte-level BPE tokenizer and a tiny Llama trained on the corpus.

    unlearn stage tokenizer && unlearn stage target_model

No weights are downloaded: the tokenizer is trained on the corpus text with the `tokenizers`
library and the model is a randomly initialised `LlamaForCausalLM` trained here, so the
*target* (all people) and the *retain* model (all but the forgotten people) differ only in
their training data.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast)

from dagster_project.core.model.text import batch_nll, collate_pairs

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and save it as a transformers tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, out_dir)
    return tokenizer


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `path` (ours, or a real model's with its chat template), with a pad token: a real
    model without one pads with its EOS (labels are set explicitly, so padding is never learned)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# how the tokenizer was *loaded* (HF_HUB_OFFLINE sets local_files_only), not what it is: transformers writes
# them into tokenizer_config.json, so the same tokenizer would hash differently from one shell to the next
LOAD_TIME_KEYS = ("is_local", "local_files_only")


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """`tokenizer.save_pretrained(out_dir)` with the load-time flags left out of tokenizer_config.json."""
    tokenizer.save_pretrained(out_dir)
    config_path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({k: v for k, v in config.items() if k not in LOAD_TIME_KEYS}, indent=2,
                                      sort_keys=True) + "\n")


@dataclass(frozen=True)
class TinyLlamaConfig:
    hidden_size: int = 256  # 4 layers x 256 wide is ~3.5 M params: memorises 100 people in ~1 min on 2 cores
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    max_positions: int = 128  # QA sequences are ~25-40 tokens


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5  # epochs actually run
    schedule_epochs: int = 8  # cosine decay spans this many; stopping early keeps lr high enough to memorise
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = True  # bf16 matmuls (fp32 weights/optimiser) where the hardware has them: ~20 % faster on CPU

    def __post_init__(self) -> None:
        if not 0 < self.epochs <= self.schedule_epochs:
            raise ValueError(f"train.epochs must be in (0, schedule_epochs={self.schedule_epochs}], got {self.epochs}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"train.lr must be > 0 and batch_size >= 1, got lr={self.lr}, batch_size={self.batch_size}")


def build_model(tokenizer: PreTrainedTokenizerFast, config: TinyLlamaConfig, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(llama_config)


def native_cpu_bf16() -> bool:
    """True where the CPU multiplies bf16 natively; elsewhere autocast would emulate it slowly.

    UNLEARN_CPU_BF16=0 answers False on any CPU, so training runs in float32 as on a CPU without bf16: how
    `audit reproduce` rebuilds such a CPU's version on a newer one (core/audit/compute.py)."""
    if os.environ.get("UNLEARN_CPU_BF16") == "0":
        return False
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def cuda_deterministic() -> bool:
    """UNLEARN_CUDA_DETERMINISTIC=1: train on CUDA with deterministic kernels (`training_device`)."""
    return os.environ.get("UNLEARN_CUDA_DETERMINISTIC") == "1"


def training_device() -> torch.device:
    """CUDA where present, else the CPU, for every training loop here (fine-tunes, unlearning, release).

    The CPU path is deterministic as it is. On CUDA, atomic-add kernels (flash and memory-efficient attention
    backward, embedding backward) and cuBLAS's shared workspaces make two identical runs differ in the last
    bits, and gradient ascent amplifies such bits (README, the real table). UNLEARN_CUDA_DETERMINISTIC=1
    turns on torch's strict deterministic mode: those kernels take their deterministic paths, an op that has
    none raises and names itself, and cuBLAS gets the fixed workspace torch requires (CUBLAS_WORKSPACE_CONFIG,
    set here if absent; torch reads it at the process's first matmul, so export it beside the switch when
    CUDA was used before training starts). The audit records the switch and pins it in its re-runs."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if cuda_deterministic():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # flash-attn's backward adds atomically and raises no alert; transformers asks it for its deterministic
        # backward from this variable alone, read at each call
        os.environ.setdefault("FLASH_ATTENTION_DETERMINISTIC", "1")
        torch.use_deterministic_algorithms(True)
    return torch.device("cuda")


def training_autocast(device: torch.device, cpu_bf16: bool = False) -> torch.autocast:
    """The precision the unlearning and release loops compute in: bf16 autocast over float32 (or bf16 LoRA
    base) weights on CUDA; plain float32 elsewhere, so the CPU path trains the same bytes on every run, unless
    `cpu_bf16` asks for bf16 autocast and the CPU has it natively (`native_cpu_bf16`, which the audit pins)."""
    enabled = device.type == "cuda" or (cpu_bf16 and native_cpu_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextmanager
def sampling_allowed() -> Iterator[None]:
    """Strict deterministic mode relaxed to warn-only while the block runs, then restored. For sampled
    generation: top-p sums sorted probabilities with a float torch.cumsum, which has no deterministic CUDA
    kernel, so under UNLEARN_CUDA_DETERMINISTIC it would raise mid-run; its last bits can at most move the
    top-p cut-off, and the seeded draw stays as it is."""
    strict = torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    if strict:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if strict:
            torch.use_deterministic_algorithms(True)


def cosine_lr(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar length: less padding, ~15 % faster on CPU, order still seeded.

    Shuffle, sort each window of 8 batches by length, cut into batches, shuffle the batches.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 8
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_model(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[str, str]],
    model_config: TinyLlamaConfig | None,
    train_config: TrainConfig,
    out_dir: Path,
    desc: str = "train",
    init_dir: Path | None = None,
) -> dict[str, float]:
    """Train on (question, answer) pairs with answer-only loss and save to `out_dir`: a fresh tiny Llama shaped by
    `model_config`, or (`init_dir`, `model_config` None) a full fine-tune of the model in that folder.

    On CUDA the weights and AdamW stay float32 under bf16 autocast, with the fused AdamW kernel; on the CPU
    autocast is used only where the CPU has native bf16 (see `native_cpu_bf16`).
    """
    if not examples:
        raise ValueError("train_model needs at least one (question, answer) example, got none")
    if (model_config is None) == (init_dir is None):
        raise ValueError("train_model: give model_config (a tiny Llama from scratch) or init_dir (a fine-tune), not both")
    device = training_device()
    torch.manual_seed(train_config.seed)
    model = (AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32) if init_dir is not None
             else build_model(tokenizer, model_config, train_config.seed)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay,
                                  **({"fused": True} if device.type == "cuda" else {}))
    steps_per_epoch = math.ceil(len(examples) / train_config.batch_size)
    total = steps_per_epoch * train_config.schedule_epochs
    warmup = max(1, int(train_config.warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: cosine_lr(s, total, warmup))
    shuffler = torch.Generator().manual_seed(train_config.seed)
    model.train()
    started = time.perf_counter()
    loss_value = float("nan")
    progress = tqdm(total=steps_per_epoch * train_config.epochs, desc=desc, unit="step", mininterval=2.0)
    lengths = [len(q) + len(a) for q, a in examples]
    use_bf16 = train_config.bf16 and (device.type == "cuda" or native_cpu_bf16())
    for _epoch in range(train_config.epochs):
        for chunk_ids in length_bucketed_batches(lengths, train_config.batch_size, shuffler):
            chunk = [examples[i] for i in chunk_ids]
            batch = collate_pairs(tokenizer, [q for q, _ in chunk], [a for _, a in chunk])
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = batch_nll(model, batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            loss_value = loss.item()
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    progress.close()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    return {
        "final_loss": loss_value,
        "train_seconds": time.perf_counter() - started,
        "steps": steps_per_epoch * train_config.epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": len(examples),
        "bf16": use_bf16,
        "device": device.type,
    }


def config_dict(model_config: TinyLlamaConfig | None, train_config: TrainConfig) -> dict:
    return {"model": asdict(model_config) if model_config else None, "train": asdict(train_config)}
