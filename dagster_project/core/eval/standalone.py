"""Evaluate any model outside the pipeline: a local HF directory, a peft adapter, or a registry URI.

    unlearn eval --model models:/tofu-tiny-llama@candidate --split forget10 --json
    unlearn eval --model assets/unlearned/demo-forget10 --reference assets/models/retain-demo-forget10

Without `--reference` (a real request has no retain model) only retain-free metrics are reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from dagster_project.core.data.corpus import load_corpus
from dagster_project.core.data.io import read_json, write_json
from dagster_project.core.data.schema import FORGET_SPLITS
from dagster_project.core.eval.report import build_eval_sets, build_report, score_model
from dagster_project.core.model.tiny_llama import load_tokenizer, training_device
from dagster_project.core.tracking.mlflow_registry import download_model_version


def resolve_model_dir(spec: str, root: Path) -> Path:
    """A local folder for `spec`; `models:/name@alias` and `models:/name/version` are fetched from MLflow."""
    if spec.startswith("models:/"):
        return download_model_version(root, spec)
    path = Path(spec)
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise FileNotFoundError(f"--model {spec}: expected a model or adapter folder or a models:/ URI; {path} is not a folder")
    return path


def adapter_base_dir(adapter_dir: Path) -> Path:
    """The base model folder an adapter names: relative to the adapter folder (this pipeline's adapters,
    see runner.make_adapter_portable) or absolute (adapters from elsewhere)."""
    base = Path(json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"])
    return base if base.is_absolute() else (adapter_dir / base).resolve()


def load_for_eval(model_dir: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A model folder as is; an adapter folder merged into the base model its adapter_config names. In float32
    whatever the folder holds (transformers would load a bf16 folder as bf16; scores stay comparable between
    models and devices) on the device training uses: generation, scoring, SNAP's θ₀ answers and
    the reveal run on the GPU where there is one."""
    adapter_config = model_dir / "adapter_config.json"
    if adapter_config.exists():
        from peft import PeftModel

        base_dir = adapter_base_dir(model_dir)
        if not base_dir.is_dir():
            raise FileNotFoundError(f"adapter {model_dir}: its base model folder {base_dir} does not exist here")
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
        tokenizer = load_tokenizer(base_dir)
    else:
        model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), load_tokenizer(model_dir)
    return model.to(training_device()).eval(), tokenizer


def cached_model_scores(cache_file: Path, model_dir: Path, score: Callable[[torch.nn.Module, PreTrainedTokenizerFast], Any],
                        use_cache: bool = True) -> Any:
    """`score(model, tokenizer)` of the model in `model_dir`, read back from `cache_file` when it exists (the
    file's name is a hash of everything that decides the scores); `use_cache=False` scores afresh and leaves
    the cache as it was (an audit's re-run)."""
    if use_cache and cache_file.exists():
        return read_json(cache_file)
    model, tokenizer = load_for_eval(model_dir)
    scores = score(model, tokenizer)
    if use_cache:
        write_json(cache_file, scores)
    return scores


def evaluate_models(root: Path, corpus_dir: Path, split: str, specs: dict[str, str], eval_params: dict,
                    reference: str | None) -> dict:
    """Score each named model on `split` (forget) vs the other trained people, world facts and holdout."""
    if split not in FORGET_SPLITS:
        raise ValueError(f"--split: expected one of {', '.join(FORGET_SPLITS)}, got {split!r}")
    corpus = load_corpus(corpus_dir)
    forget_ids, retain_ids = set(corpus.splits[split]), set(corpus.splits["retain"])
    eval_sets = build_eval_sets(corpus, [r for r in corpus.qa if r["person_id"] in forget_ids],
                                [r for r in corpus.qa if r["person_id"] in retain_ids], eval_params)
    scores = {}
    for name, spec in specs.items():
        model, tokenizer = load_for_eval(resolve_model_dir(spec, root))
        scores[name] = score_model(model, tokenizer, eval_sets, eval_params["batch_size"], eval_params["max_new_tokens"],
                                   relearn_steps=eval_params["relearn_steps"], seed=eval_params["seed"])
    return build_report(eval_sets, scores, reference=reference)
