"""Release (arXiv 2509.14624, steps 3-4): unlearn what Reveal surfaced, in rounds, with two LoRA modules.

Each round adds a *forget* module trained on the round's revealed data (objective: NPO, gradient ascent or
SNAP-style obliteration) and a *retain* module trained on retain data, both active in every forward pass,
kept apart by the O-LoRA loss  Σ_layers Σ_jk |A_f·A_rᵀ|_jk . The round's modules are saved, merged into the
weights, and the merged model reveals again; rounds stop when the revealed relevance falls below
`stop_relevance` or the round budget is spent. The result is the composition of every round: a full model.
θ₀ for NPO is the model at the start of the round (the modules disabled), so nothing is stored twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from peft.tuners.lora import LoraLayer
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from dagster_project.core.data.io import write_json, write_jsonl
from dagster_project.core.data.snap import obliterated_pairs
from dagster_project.core.methods.base import check_bounds, config_from_hyperparameters, reference_weights
from dagster_project.core.methods.npo import npo_loss
from dagster_project.core.methods.runner import (
    BatchSampler,
    NonFiniteLoss,
    make_adapter_portable,
    training_pairs,
)
from dagster_project.core.model.anatomy import lora_config
from dagster_project.core.model.text import batch_nll, collate_pairs, sequence_logprob
from dagster_project.core.model.tiny_llama import save_tokenizer, training_autocast, training_device
from dagster_project.core.reveal.reveal import RevealConfig, RevealResult, reveal
from dagster_project.core.reveal.scoring import Encoder

# a request's `method` picks the forget module's objective
OBJECTIVES = {"npo": "npo", "graddiff": "ascent", "gradascent": "ascent", "snap": "obliterate"}
FORGET, RETAIN = "forget", "retain"


@dataclass(frozen=True)
class ReleaseConfig:
    # bounds as MethodConfig declares them (methods/base.py `check_bounds`)
    rounds: int = field(default=3, metadata={"positive": True, "max": 50})
    # per round, each a forget-module step and a retain-module step
    steps: int = field(default=60, metadata={"positive": True, "max": 100_000})
    # NPO on revealed (noisy) data is destructive above ~5e-4: params.yaml `release:`
    lr: float = field(default=4e-4, metadata={"positive": True, "max": 1.0})
    batch_size: int = field(default=16, metadata={"positive": True, "max": 4096})
    beta: float = field(default=0.1, metadata={"positive": True, "max": 1e3})  # NPO
    orth_weight: float = field(default=1.0, metadata={"max": 1e6})  # O-LoRA
    lora_r: int = field(default=8, metadata={"positive": True, "max": 1024})
    lora_alpha: int = field(default=16, metadata={"positive": True, "max": 16384})
    max_grad_norm: float = field(default=1.0, metadata={"positive": True, "max": 1e4})
    stop_relevance: float = 0.3  # stop once a reveal's mean relevance falls below this
    seed: int = 0

    def __post_init__(self) -> None:
        check_bounds(self)


def release_config(hyperparameters: dict[str, Any]) -> ReleaseConfig:
    """A reveal request's hyper-parameters (params.yaml `release:` overridden by the request), checked by name."""
    return config_from_hyperparameters(ReleaseConfig, hyperparameters)


def olora_loss(model: torch.nn.Module, first: str = FORGET, second: str = RETAIN) -> torch.Tensor:
    """Σ over LoRA layers of the summed absolute entries of A_first · A_secondᵀ (r × r per layer)."""
    terms = [(m.lora_A[first].weight @ m.lora_A[second].weight.T).abs().sum()
             for m in model.modules() if isinstance(m, LoraLayer) and first in m.lora_A and second in m.lora_A]
    if not terms:
        raise ValueError(f"no LoRA layer holds both adapters {first!r} and {second!r}")
    return torch.stack(terms).sum()


def with_modules(model: torch.nn.Module, config: ReleaseConfig) -> torch.nn.Module:
    """`model` wrapped with fresh forget and retain LoRA modules, both active and trainable."""
    lora = lora_config(model, config.lora_r, config.lora_alpha)
    peft_model = get_peft_model(model, lora, adapter_name=FORGET)
    peft_model.add_adapter(RETAIN, lora)
    peft_model.base_model.set_adapter([FORGET, RETAIN])  # both in every forward; set_adapter makes both trainable
    return peft_model


def forget_loss(objective: str, model: torch.nn.Module, batch: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    if objective == "npo":
        logp, _ = sequence_logprob(model, batch)
        with reference_weights(model) as reference:
            reference_logp, _ = sequence_logprob(reference, batch)
        return npo_loss(logp, reference_logp, beta)
    if objective == "ascent":
        return -batch_nll(model, batch)
    return batch_nll(model, batch)  # obliterate: the batch pairs each question with a refusal


def forget_pairs(objective: str, records: Sequence[dict[str, Any]], seed: int) -> list[tuple[str, str]]:
    """What the forget module trains on: revealed (question, response) pairs, or for obliteration each
    question paired with a refusal naming its subject."""
    if objective != "obliterate":
        return training_pairs(records)
    return [pair for r in records for pair in obliterated_pairs(r["subject"], r["train_questions"], seed)]


def train_round(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, forget: list[tuple[str, str]],
                retain: list[tuple[str, str]], objective: str, config: ReleaseConfig, round_: int) -> dict[str, float]:
    device = next(model.parameters()).device
    params = {name: [p for n, p in model.named_parameters() if f".{name}." in n] for name in (FORGET, RETAIN)}
    optimisers = {name: torch.optim.AdamW(ps, lr=config.lr, weight_decay=0.0) for name, ps in params.items()}
    seed = config.seed + 1000 * round_
    samplers = {FORGET: BatchSampler(forget, config.batch_size, seed), RETAIN: BatchSampler(retain, config.batch_size, seed + 1)}
    logs: dict[str, float] = {}
    model.train()
    progress = tqdm(range(config.steps), desc=f"release round {round_} ({objective})", unit="step", mininterval=2.0)
    for _step in progress:
        for name in (FORGET, RETAIN):  # each module learns from its own data; the O-LoRA term couples them
            pairs = samplers[name].next()
            batch = {k: v.to(device) for k, v in collate_pairs(tokenizer, [q for q, _ in pairs], [a for _, a in pairs]).items()}
            other = params[RETAIN if name == FORGET else FORGET]
            for p in other:  # only this module steps: no weight gradients for the other (the same update, cheaper)
                p.requires_grad_(False)
            try:
                with training_autocast(device):
                    term = forget_loss(objective, model, batch, config.beta) if name == FORGET else batch_nll(model, batch)
                    orthogonality = olora_loss(model)
                optimisers[name].zero_grad(set_to_none=True)
                total = term + config.orth_weight * orthogonality
                if not torch.isfinite(total):
                    raise NonFiniteLoss(f"release round {round_} ({name} module)", _step + 1, config, "release: lr")
                total.backward()
            finally:
                for p in other:
                    p.requires_grad_(True)
            torch.nn.utils.clip_grad_norm_(params[name], config.max_grad_norm)
            optimisers[name].step()
            logs[f"{name}_loss"], logs["olora"] = term.item(), orthogonality.item()
        progress.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
    model.eval()
    return logs


def release(target_dir: Path, tokenizer: PreTrainedTokenizerFast, subjects: Sequence[str], first_reveal: RevealResult,
            retain_records: Sequence[dict[str, Any]], method: str, config: ReleaseConfig, reveal_config: RevealConfig,
            encode: Encoder, out_dir: Path, data_dir: Path, encoder_name: str = "") -> dict[str, Any]:
    """Rounds of release starting from the target model's reveal (`first_reveal`); the final merged model,
    each round's two adapters under `out_dir/rounds/round-k/`; each round's revealed data and reveal log under
    `data_dir/round-k/`: personal data, kept apart from the model folder, which is logged to MLflow."""
    if method not in OBJECTIVES:
        raise ValueError(f"method {method!r}: a reveal request's forget objective must be one of {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[method]
    device = training_device()
    torch.manual_seed(config.seed)
    # float32 weights on every device: each round merges its modules into them, and bf16 weights would round
    # every weight once and each round's change again, in the model evaluation and the relearning attack
    # read; CUDA gets its speed from bf16 autocast, as the runner's full runs do
    model = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).to(device)
    retain = training_pairs(retain_records)
    revealed, rounds, stopped = first_reveal, [], "round budget spent"
    started = time.perf_counter()
    for round_ in range(config.rounds):
        if round_ > 0:
            revealed = reveal(model, tokenizer, subjects, RevealConfig(**{**asdict(reveal_config), "seed": reveal_config.seed + round_}),
                              encode, encoder_name)
        if revealed.mean_relevance < config.stop_relevance or not revealed.records:
            stopped = f"revealed relevance {revealed.mean_relevance:.3f} < {config.stop_relevance} before round {round_}"
            break
        peft_model = with_modules(model, config)
        logs = train_round(peft_model, tokenizer, forget_pairs(objective, revealed.records, config.seed), retain,
                           objective, config, round_)
        round_dir = out_dir / "rounds" / f"round-{round_}"
        peft_model.save_pretrained(round_dir)  # non-default adapter names: round_dir/forget/, round_dir/retain/
        for name in (FORGET, RETAIN):
            make_adapter_portable(round_dir / name, target_dir)
        write_jsonl(data_dir / f"round-{round_}" / "revealed.jsonl", revealed.records)
        write_jsonl(data_dir / f"round-{round_}" / "reveal_log.jsonl", revealed.log)
        rounds.append({"round": round_, **revealed.summary(), **{f"final_{k}": v for k, v in logs.items()}})
        model = peft_model.merge_and_unload()
    model.save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    result = {"method": method, "objective": objective, "rounds_done": len(rounds), "stopped": stopped, "rounds": rounds,
              "config": asdict(config), "device": device.type, "seconds": time.perf_counter() - started}
    write_json(out_dir / "release_manifest.json", {k: v for k, v in result.items() if k != "seconds"})
    return result
