"""The one training loop every unlearning method runs in (LoRA or full weights, CPU or CUDA).

    unlearn stage unlearned_adapter

`run_unlearning` drives an `UnlearningLoop` from start to saved result; benchmarks time its `step()`.
On CUDA: LoRA runs hold the base weights in bf16, full runs keep float32 weights under bf16 autocast, AdamW
uses its fused kernel, attention is PyTorch's SDPA; `RunnerOptions` adds gradient checkpointing,
`torch.compile`, length-bucketed and padding-free batches. The CPU path stays deterministic (float32, same bytes twice).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from dagster_project.core.methods.base import MethodConfig
from dagster_project.core.methods.checkpoint import Checkpointing, load_checkpoint, save_checkpoint
from dagster_project.core.methods.registry import get_method
from dagster_project.core.model.anatomy import lora_config
from dagster_project.core.model.padding_free import PaddingFree
from dagster_project.core.model.text import collate_pairs
from dagster_project.core.model.tiny_llama import cosine_lr, save_tokenizer, training_autocast, training_device

MODES = ("lora", "full")
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flex_attention")
SHARDING = ("none", "fsdp")


def trainable_attention(device: torch.device) -> list[str]:
    """The `runner.attention` kernels that can train on `device`: PyTorch's flex attention has no backward pass
    on the CPU, and flash_attention_2 needs CUDA and the flash-attn package."""
    if device.type != "cuda":
        return ["sdpa", "eager"]
    flash = ["flash_attention_2"] if importlib.util.find_spec("flash_attn") else []
    return ["sdpa", "eager", "flex_attention", *flash]


def training_pairs(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs in the phrasings the model was trained on; evaluation keeps the held-out one.

    QA records give one pair per training phrasing; records of the user's own sources (core/sources) give their
    (prompt, completion), the prompt empty for free text."""
    return [pair for r in records
            for pair in ([(q, r["answer"]) for q in r["train_questions"]] if "train_questions" in r
                         else [(r["prompt"], r["completion"])])]


@dataclass(frozen=True)
class RunnerOptions:
    """How the loop uses the hardware, not what it learns (params.yaml `runner:`); defaults suit the CPU."""

    attention: str = field(default="sdpa", metadata={
        "help": "attn_implementation: sdpa | eager | flash_attention_2 (flash-attn installed) | flex_attention (GPU)"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the backward pass: less memory, ~30 % more compute"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (the first steps pay for it)"})
    length_buckets: int = field(
        default=1, metadata={"help": "draw this many batches at once and group them by length: less padding; 1 = off"})
    padding_free: bool = field(
        default=False, metadata={"help": "pack each batch's real tokens into one row: no compute on padding "
                                         "(core/model/padding_free.py; pays off with flash_attention_2)"})
    processes: int = field(
        default=1, metadata={"help": "data-parallel processes (one per GPU; gloo CPU processes without GPUs)"})
    cpu_bf16: bool = field(
        default=False, metadata={"help": "bf16 autocast on a CPU that multiplies bf16 natively (AVX512-BF16, AMX): "
                                         "~1.7x faster for a 135 M model; deterministic on one machine, another "
                                         "CPU gives other bytes (the audit records and pins it)"})
    sharding: str = field(
        default="none", metadata={"help": "none: every process holds the whole model (DDP's maths); fsdp: "
                                          "weights, gradients and AdamW state sharded over the processes (FSDP2)"})

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ValueError(f"runner.attention: expected one of {ATTENTION}, got {self.attention!r}")
        if self.length_buckets < 1:
            raise ValueError(f"runner.length_buckets: must be >= 1, got {self.length_buckets}")
        if self.processes < 1:
            raise ValueError(f"runner.processes: must be >= 1, got {self.processes}")
        if self.sharding not in SHARDING:
            raise ValueError(f"runner.sharding: expected one of {SHARDING}, got {self.sharding!r}")
        if self.sharding == "fsdp" and self.processes < 2:
            raise ValueError("runner.sharding: fsdp shards over processes; set runner.processes to 2 or more")


class BatchSampler:
    """Endless seeded reshuffling sampler over a list of QA pairs.

    With `buckets` > 1 it draws `buckets` batches at a time, sorts their pairs by length, cuts them into batches
    of similar length and serves those in a seeded random order: the same pairs per epoch, less padding."""

    def __init__(self, pairs: list[tuple[str, str]], batch_size: int, seed: int, buckets: int = 1) -> None:
        if not pairs:
            raise ValueError("cannot sample batches from an empty dataset")
        self.pairs, self.batch_size, self.buckets, self.rng = pairs, batch_size, buckets, random.Random(seed)
        self.order: list[int] = []
        self.queue: list[list[int]] = []

    def _draw(self, count: int) -> list[int]:
        drawn = []
        while len(drawn) < count:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            drawn.append(self.order.pop())
        return drawn

    def next(self) -> list[tuple[str, str]]:
        if self.buckets == 1:
            return [self.pairs[i] for i in self._draw(self.batch_size)]
        if not self.queue:
            drawn = sorted(self._draw(self.batch_size * self.buckets), key=lambda i: len("".join(self.pairs[i])))
            self.queue = [drawn[k:k + self.batch_size] for k in range(0, len(drawn), self.batch_size)]
            self.rng.shuffle(self.queue)
        return [self.pairs[i] for i in self.queue.pop()]

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler is in its shuffled order: restoring it resumes the same batch sequence."""
        return {"rng": self.rng.getstate(), "order": list(self.order), "queue": [list(b) for b in self.queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])
        self.order, self.queue = list(state["order"]), [list(b) for b in state["queue"]]


def prepare_model(model_dir: Path, mode: str, config: MethodConfig, device: torch.device,
                  lora_targets: Sequence[str] | None = None, options: RunnerOptions = RunnerOptions(),
                  keep_reference: bool = True) -> torch.nn.Module:
    """The model to train: LoRA adapters over the base, or the full model with (`keep_reference`) a frozen θ₀."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    torch.manual_seed(config.seed)
    # LoRA trains small adapters over frozen bf16 base weights on CUDA; a full run keeps float32 master weights
    # (bf16 AdamW updates lose the small steps unlearning takes) and gets its speed from autocast
    dtype = torch.bfloat16 if device.type == "cuda" and mode == "lora" else torch.float32
    available = trainable_attention(device)
    if options.attention not in available:
        raise ValueError(f"runner.attention: {options.attention} cannot train on this machine ({device.type}); it has "
                         f"{available} (flex attention has no CPU backward pass in PyTorch, "
                         f"flash_attention_2 needs CUDA and flash-attn)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=options.attention).to(device)
    if options.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers before the rename (a GPU image's may be older than ours)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if options.padding_free:
        PaddingFree(model)  # hooks on the causal LM itself: a peft wrapper calls it, and deepcopy keeps them
    if mode == "lora":
        model = get_peft_model(model, lora_config(model, config.lora_r, config.lora_alpha, lora_targets))
    elif keep_reference:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        model._unlearn_reference = reference  # θ₀ for KL / NPO terms; LoRA gets it by disabling the adapter
    if options.compile:
        model.compile()  # in place: parameter names (checkpoints, masks, saved files) stay as they are
    return model


class UnlearningLoop:
    """One unlearning run of `method_name` on the model at `model_dir`, one optimiser step per `step()`.

    `method_data`: a method's own training sets built by the pipeline (SNAP's `snap_data`); None: it builds them.
    `mask`: full mode only, parameter name -> bool tensor of its shape, True = trainable (a WAGLE mask from
    `dagster_project.core.attribution`); False elements stay bit-identical, unnamed parameters train fully.
    `lora_targets`: lora mode only, the modules to adapt (WAGLE's choice by attribution mass); default: every
    linear map but the output head, whatever the architecture calls it (`default_lora_targets`).
    """

    def __init__(self, model_dir: Path, tokenizer: PreTrainedTokenizerBase, forget_records: Sequence[dict],
                 retain_records: Sequence[dict], method_name: str, mode: str, hyperparameters: dict,
                 method_data: dict | None = None, mask: dict[str, torch.Tensor] | None = None,
                 lora_targets: Sequence[str] | None = None, options: RunnerOptions = RunnerOptions()) -> None:
        if mask is not None and mode == "lora":
            raise ValueError("mask: a weight mask applies to full-weight runs only (LoRA trains adapters, not the "
                             "masked base weights); for LoRA pick the adapted modules with "
                             "dagster_project.core.attribution.lora_targets_from_attribution instead")
        spec = get_method(method_name)
        self.method_name, self.mode, self.model_dir, self.tokenizer = method_name, mode, model_dir, tokenizer
        self.config = spec.config_cls.from_hyperparameters(hyperparameters)
        self.method = spec.method_cls(self.config)
        self.method.prepare(forget_records, retain_records, method_data)
        self.device = training_device()
        self.cpu_bf16 = options.cpu_bf16
        self.model = prepare_model(model_dir, mode, self.config, self.device, lora_targets, options,
                                   keep_reference=self.method.uses_reference())
        self.rank, self.world = _process_group()
        self.sharded = options.sharding == "fsdp" and self.world > 1
        if self.sharded:
            if mask is not None:
                raise ValueError("mask: a WAGLE weight mask needs whole weights on every process; use "
                                 "runner.sharding: none (or LoRA targets) with a mask")
            shard(self.model)  # parameters become DTensor shards: list them (and build AdamW) only afterwards
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.frozen = frozen_elements(self.model, mask) if mask is not None else []
        fully_frozen = {id(p) for p, elements in self.frozen if bool(elements.all())}
        # weight_decay must stay 0 under a mask: AdamW's decoupled decay shrinks every element of a parameter
        # group whether or not its gradient is zero, and a group holds whole tensors, so an element-wise mask
        # cannot exempt its frozen elements from it; tensors frozen entirely are left out of the optimiser
        self.optimiser = torch.optim.AdamW([p for p in self.trainable if id(p) not in fully_frozen], lr=self.config.lr,
                                           weight_decay=0.0, **({"fused": True} if self.device.type == "cuda" else {}))
        warmup = max(1, int(self.config.warmup_ratio * self.config.steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimiser,
                                                           lambda s: cosine_lr(s, self.config.steps, warmup))
        size, seed, buckets = self.config.batch_size, self.config.seed, options.length_buckets
        if size % self.world:
            raise ValueError(f"hyperparameters.batch_size: {size} does not split evenly over {self.world} processes")
        self.forget = BatchSampler(training_pairs(forget_records), size, seed, buckets)
        self.retain = BatchSampler(training_pairs(retain_records), size, seed + 1, buckets)
        self.steps_done, self.tokens, self.logs = 0, 0, {}
        self.model.train()

    def parts(self) -> dict[str, Any]:
        """The stateful parts a checkpoint saves beside the trainable weights."""
        return {"optimiser": self.optimiser, "scheduler": self.scheduler, "forget_sampler": self.forget,
                "retain_sampler": self.retain, "method": self.method}

    def _batch(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        pairs = pairs[self.rank::self.world]  # every process draws the same global batch and trains on its share
        batch = collate_pairs(self.tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
        self.tokens += int(batch["attention_mask"].sum())
        return {k: v.to(self.device) for k, v in batch.items()}

    def step(self) -> dict[str, float]:
        """One optimiser step over `grad_accum` micro-batches; returns the method's logs."""
        self.optimiser.zero_grad(set_to_none=True)
        for _micro in range(self.config.grad_accum):
            forget_pairs = self.forget.next()
            # named extra batches: IdkSFT/IdkDPO's `alternative` answers, SNAP's obliterated and hard-positive pairs
            extra = {name: self._batch(pairs) for name, pairs in self.method.extra_pairs(forget_pairs).items()}
            forget, retain = self._batch(forget_pairs), self._batch(self.retain.next())
            with training_autocast(self.device, cpu_bf16=self.cpu_bf16):
                loss, self.logs = self.method.loss(self.model, forget, retain, **extra)
            if not torch.isfinite(loss):  # the weights are lost already: nothing this run saves would be a model
                raise NonFiniteLoss(self.method_name, self.steps_done + 1, self.config, f"unlearn: {self.method_name}: lr")
            (loss / self.config.grad_accum).backward()
        if self.world > 1:
            if not self.sharded:  # FSDP has reduce-scattered the gradients already
                average_gradients(self.trainable, self.world)
            self.logs = average_logs(self.logs, self.world, self.device)
        torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        for param, elements in self.frozen:  # after clipping, before the step (WAGLE, arXiv 2410.17509): grad ⊙ mask
            if param.grad is not None:
                param.grad.masked_fill_(elements, 0.0)  # zero, not × 0: a NaN/inf gradient cannot leak through
        self.optimiser.step()
        self.scheduler.step()
        self.steps_done += 1
        return self.logs

    def diverged(self) -> bool:
        """Ascent ran away: the forget NLL is no longer finite or beyond `diverge_nll`."""
        return not math.isfinite(self.logs["forget_nll"]) or self.logs["forget_nll"] > self.config.diverge_nll

    def save(self, out_dir: Path) -> None:
        """An adapter folder (lora, base named relative to it) or a self-contained model folder (full), written by
        process 0; every process must call it (a sharded model is gathered first, a collective operation)."""
        self.model.eval()
        if hasattr(self.model, "_unlearn_reference"):
            del self.model._unlearn_reference
        state = None
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if self.mode == "full" and getattr(self.model.config, "tie_word_embeddings", False):
                # a tied head is the embedding: written once, as save_pretrained does from the model itself
                head = self.model.get_output_embeddings()
                state.pop(next(f"{n}.weight" for n, m in self.model.named_modules() if m is head), None)
        if self.rank > 0:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir, state_dict=state)
        if self.mode == "lora":
            make_adapter_portable(out_dir, self.model_dir)
        else:
            save_tokenizer(self.tokenizer, out_dir)  # a full model folder is self-contained, like the target's


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite: the run stops before saving anything, naming the likely cause."""

    def __init__(self, what: str, step: int, config: Any, params_section: str) -> None:
        super().__init__(
            f"{what}: the training loss is not finite at step {step} of {config.steps} (lr {config.lr:g}); the "
            f"weights blew up, most often because the learning rate is too high for this model: lower the request's "
            f"hyperparameters.lr (default: params.yaml `{params_section}`) or max_grad_norm ({config.max_grad_norm:g})"
            f". Nothing was saved.")


def _process_group() -> tuple[int, int]:
    """(rank, world size) of a distributed run (`torchrun`/`accelerate launch`, see distributed.py); (0, 1) alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(model: torch.nn.Module) -> None:
    """FSDP2 (`fully_shard`): each decoder layer its own group, then the rest (embeddings, head) at the root;
    a full-weight run's frozen θ₀ is sharded the same way. Every process then holds 1/N of the weights,
    gradients and AdamW state; a layer's weights are gathered for its forward and backward only."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    # θ₀ first: it is a submodule of the model (an attribute), and must be its own root, gathered for its own
    # forward, not inside the trained model's root group
    for module in [*([model._unlearn_reference] if hasattr(model, "_unlearn_reference") else []), model]:
        for layer in [m for m in module.modules() if type(m).__name__.endswith("DecoderLayer")]:
            if not isinstance(layer, FSDPModule):
                fully_shard(layer)
        fully_shard(module)


def average_gradients(params: Sequence[torch.nn.Parameter], world: int) -> None:
    """Data parallelism's one collective: every process ends the backward pass with the mean gradient.

    The maths of DistributedDataParallel, done here instead of by wrapping the model: methods call the model
    several times a step and reach into θ₀ (the disabled adapter, the frozen copy) and its layers, which the
    DDP wrapper hides. One all-reduce of a flattened buffer per step (gloo on CPUs, NCCL on GPUs)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= world
    for param, synced in zip(params, torch._utils._unflatten_dense_tensors(flat, grads)):
        param.grad = synced


def average_logs(logs: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """The processes' logs averaged, so every process reports (and stops early on) the same numbers. The
    buffer lives on the training device: NCCL, the GPU backend, has no CPU tensors (accelerate starts it as
    the only backend)."""
    values = torch.tensor([logs[k] for k in sorted(logs)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return {k: v / world for k, v in zip(sorted(logs), values.tolist())}


def run_unlearning(
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    forget_records: Sequence[dict],
    retain_records: Sequence[dict],
    method_name: str,
    mode: str,
    hyperparameters: dict,
    out_dir: Path,
    method_data: dict | None = None,
    mask: dict[str, torch.Tensor] | None = None,
    lora_targets: Sequence[str] | None = None,
    checkpoint: Checkpointing | None = None,
    options: RunnerOptions = RunnerOptions(),
) -> dict:
    """Unlearn `forget_records` from the model at `model_dir`; save an adapter (lora) or model (full).

    Arguments as for `UnlearningLoop`, plus `checkpoint`: save the training state periodically and resume from
    a matching saved state: a run killed mid-training and started again ends with the same bytes as one that
    was never interrupted. In a distributed run (distributed.py) every process trains its share of each batch,
    process 0 saves the result, and checkpoints are off (each process holds its own method state).
    """
    loop = UnlearningLoop(model_dir, tokenizer, forget_records, retain_records, method_name, mode, hyperparameters,
                          method_data, mask, lora_targets, options)
    checkpoint = checkpoint if loop.world == 1 else None
    started = time.perf_counter()
    resumed = load_checkpoint(checkpoint, loop.model, loop.parts()) if checkpoint else None
    if resumed:
        loop.steps_done, loop.logs = resumed["steps_done"], resumed["logs"]
    steps, stopped_early = loop.config.steps, False
    progress = tqdm(range(loop.steps_done, steps), desc=f"unlearn {method_name}/{mode}", unit="step",
                    mininterval=2.0, initial=loop.steps_done, total=steps, disable=loop.rank > 0)
    for _step in progress:
        logs = loop.step()
        progress.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
        if loop.diverged():
            stopped_early = True
            break
        if checkpoint and loop.steps_done % checkpoint.every == 0 and loop.steps_done < steps:
            save_checkpoint(checkpoint, loop.model, loop.parts(), loop.steps_done, loop.logs)
    progress.close()
    seconds = time.perf_counter() - started
    loop.save(out_dir)
    if checkpoint:  # the result is saved: nothing left to resume
        checkpoint.path.unlink(missing_ok=True)
    return {
        "method": method_name,
        "mode": mode,
        "config": loop.config.__dict__,
        "steps_done": loop.steps_done,
        "stopped_early": stopped_early,
        "final_logs": loop.logs,
        "trainable_parameters": sum(p.numel() for p in loop.trainable) - sum(int(e.sum()) for _, e in loop.frozen),
        "seconds": seconds,
        "tokens_per_second": loop.tokens / seconds if seconds > 0 else 0.0,
        "device": loop.device.type,
        "resumed_from_step": resumed["steps_done"] if resumed else 0,
        "options": dataclasses.asdict(options),
        "processes": loop.world,
    }


def frozen_elements(
    model: torch.nn.Module, mask: dict[str, torch.Tensor]
) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, bool tensor True where frozen) for each parameter `mask` names, on the parameter's device.

    With zero gradients from the first step AdamW's moments stay 0 and its update is exactly 0, so the
    frozen elements keep their bits (given weight_decay 0, see `UnlearningLoop`).
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise ValueError(f"mask: names no trainable parameter of the model: {unknown[:5]} (expected names like "
                         f"{next(iter(params))!r})")
    pairs = []
    for name, keep in mask.items():
        if tuple(keep.shape) != tuple(params[name].shape):
            raise ValueError(f"mask[{name!r}]: expected shape {tuple(params[name].shape)}, got {tuple(keep.shape)}")
        pairs.append((params[name], ~keep.to(device=params[name].device, dtype=torch.bool)))
    return pairs


def make_adapter_portable(adapter_dir: Path, base_dir: Path) -> None:
    """Make a saved peft adapter folder hash the same wherever it is built: `target_modules` sorted (peft
    writes them from a set, in hash-seed order), the base model named by its path *relative to the adapter
    folder* (peft writes the absolute one, which also leaks the host's paths), and peft's stub README.md,
    which repeats that absolute path, removed (the version's model card is in its audit files)."""
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config["base_model_name_or_path"] = os.path.relpath(base_dir.resolve(), adapter_dir.resolve())
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (adapter_dir / "README.md").unlink(missing_ok=True)
