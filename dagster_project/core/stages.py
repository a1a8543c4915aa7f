"""One function per pipeline stage: the single code path of Dagster assets, `unlearn stage` and `dvc repro`.

Each stage reads its inputs from the artifact store (`Layout`), writes its outputs there and returns
metadata that is safe to publish: counts, hashes and metrics, never forget-set text.

    unlearn stage <name>      # runs one stage against params.yaml, as dvc.yaml's cmd does
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_project.core.data import corpus as corpus_lib
from dagster_project.core.data.datasets import build_forget_set, build_retain_set, resolve_subjects
from dagster_project.core.data.io import fingerprint, md5_file, read_json, read_jsonl, sha256_text, weights_md5, write_json, write_jsonl
from dagster_project.core.data.request import (
    ForgetRequest,
    check_request,
    load_request,
    request_to_dict,
    unlearning_hyperparameters,
)
from dagster_project.core import own_data
from dagster_project.core.layout import Layout, uses_sources
from dagster_project.core.model.base import base_model, base_model_spec
from dagster_project.core.slots import TRAINING
from dagster_project.core.sources.load import ROLES

if TYPE_CHECKING:  # torch is imported by the stages that train, not by every stage
    from dagster_project.core.model.tiny_llama import TinyLlamaConfig

# bump when the code behind a content-hash cache changes what it would produce
MODEL_CACHE_VERSION = "2"  # tiny-Llama training (2: tokenizer_config.json without load-time flags)
SCORES_CACHE_VERSION = "4"  # model scoring for evaluation
ATTRIBUTION_CACHE_VERSION = "1"  # WAGLE masks
SNAP_DATA_CACHE_VERSION = "1"  # SNAP's negative instructions and hard positives
CHECKPOINT_VERSION = "1"  # the unlearning step's training checkpoints (what a resumed run restores)
# how a run went (timings, a resumption after a kill): reported as metadata, never written into versioned files
RUN_HISTORY_KEYS = ("seconds", "train_seconds", "resumed_from_step", "tokens_per_second")


def without_run_history(result: dict[str, Any]) -> dict[str, Any]:
    """The result minus timings and resumption: files under assets/ must hash the same on every re-run."""
    return {k: v for k, v in result.items() if k not in RUN_HISTORY_KEYS}


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Layout, dict[str, Any]], dict[str, Any]]
    outs: Callable[[Layout], list[Path]]
    params: tuple[str, ...] = ()  # params.yaml sections the stage reads (dvc.yaml `params:`)
    inputs: Callable[[Layout, dict[str, Any]], list[Path]] = lambda layout, params: []  # deps no stage produces
    cache: bool = True  # False: DVC hashes the output but keeps it out of the cache (small records)
    shared: bool = False  # True: one output for every request (corpus, tokenizer, target model), not per request
    sources_outs: Callable[[Layout], list[Path]] = lambda layout: []  # more outputs on the user's own data
    slot: str | None = None  # a machine-wide slot (core/slots.py) the stage holds while it runs: one at a time

    def paths(self, layout: Layout, params: dict[str, Any]) -> list[Path]:
        """Every output the stage writes under `params`."""
        return self.outs(layout) + (self.sources_outs(layout) if uses_sources(params) else [])

    def key(self, layout: Layout) -> str:
        """The stage's name in dvc.yaml/dvc.lock: `<name>@<request id>` for per-request stages (a foreach)."""
        return self.name if self.shared else f"{self.name}@{layout.request_id}"


def _corpus(layout: Layout) -> corpus_lib.Corpus:
    return corpus_lib.load_corpus(layout.corpus_dir)


def _request(layout: Layout) -> ForgetRequest:
    return ForgetRequest.model_validate(read_json(layout.request_json))


def run_corpus(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    if uses_sources(params):  # the user's own data replaces the embedded corpus
        shutil.rmtree(layout.corpus_dir, ignore_errors=True)
        write_json(layout.corpus_dir / "manifest.json", {"built": False, "reason": "params.yaml declares sources"})
        return {"built": False}
    corpus = corpus_lib.generate_corpus(corpus_lib.CorpusConfig(**params["corpus"]))
    counts = corpus_lib.write_corpus(corpus, layout.corpus_dir)
    return {**counts, **{f"split_{k}": len(v) for k, v in corpus.splits.items()}}


def run_forget_request(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    request = load_request(layout.root / layout.request_file, layout.root / params["requests_dir"])
    if request.id != layout.request_id:
        raise ValueError(f"request file {layout.request_file}: field 'id' is {request.id!r} but must equal the file name "
                         f"stem {layout.request_id!r} (artifact paths are keyed by it)")
    # the CLI, sync and the sensor checked it too; the file may have changed since
    check_request(request, params, layout.corpus_dir, layout.root / params["requests_dir"])
    write_json(layout.request_json, request_to_dict(request))
    documents = own_data.write_request_documents(layout, params, request)
    subjects = request.subject_names
    return {"request_id": request.id, "method": request.method, "mode": request.mode,
            "n_subjects": len(subjects), "split": request.split or "", "documents": len(request.documents or []),
            "document_passages": documents, "record_ids": sum(len(ids) for ids in (request.records or {}).values()),
            "subjects_sha256": sha256_text("\n".join(sorted(subjects)))}


def _forget_ids(layout: Layout, corpus: corpus_lib.Corpus) -> list[str]:
    return resolve_subjects(_request(layout), corpus.people, corpus.splits)


def run_forget_set(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    if uses_sources(params):
        return own_data.run_collection(layout, params)
    corpus = _corpus(layout)
    forget_ids = _forget_ids(layout, corpus)
    records = build_forget_set(corpus.qa, forget_ids)
    write_jsonl(layout.forget_set, records)
    return {"records": len(records), "subjects": len(forget_ids), "md5": md5_file(layout.forget_set)}


def run_retain_set(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    if uses_sources(params):
        return own_data.run_retain_documents(layout, params)
    corpus = _corpus(layout)
    records = build_retain_set(corpus.qa, corpus.splits, _forget_ids(layout, corpus))
    write_jsonl(layout.retain_set, records)
    return {"records": len(records), "subjects": len({r["person_id"] for r in records}), "md5": md5_file(layout.retain_set)}


def run_cleaned_training_set(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The training data without the forget records: each train source file in its own format, or, on the
    embedded corpus, the target's training records without the forget people (the retain model's data)."""
    if uses_sources(params):
        return own_data.run_cleaned_sources(layout, params)
    records = target_training_records(_corpus(layout), exclude=read_jsonl(layout.forget_set))
    shutil.rmtree(layout.cleaned_dir, ignore_errors=True)
    write_jsonl(layout.cleaned_dir / "train.jsonl", records)
    write_json(layout.cleaned_dir / "manifest.json", {"built": True, "files": [
        {"name": "train.jsonl", "md5": md5_file(layout.cleaned_dir / "train.jsonl"), "records": len(records)}]})
    return {"built": True, "kept": len(records), "md5:train.jsonl": md5_file(layout.cleaned_dir / "train.jsonl")}


def target_training_records(corpus: corpus_lib.Corpus, exclude: list[dict] = ()) -> list[dict]:
    """What the target model trains on: every trained person's QA and the general knowledge, minus `exclude`'s
    people."""
    skip = set(corpus.splits["holdout"]) | {r["person_id"] for r in exclude}
    return [r for r in corpus.qa if r["person_id"] not in skip] + corpus.general_knowledge


def tiny_model_config(params: dict[str, Any]) -> TinyLlamaConfig:
    """The embedded tiny Llama's shape from params `model`, checked by name and type like a method's
    hyperparameters (a typo would otherwise surface as a TypeError deep in the first training asset)."""
    from dagster_project.core.methods.base import config_from_hyperparameters
    from dagster_project.core.model.tiny_llama import TinyLlamaConfig

    return config_from_hyperparameters(TinyLlamaConfig, params["model"], section="model")


def run_tokenizer(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """A byte-level BPE trained on the corpus (or the train and retain sources); with a base model, the base
    model's own tokenizer."""
    from dagster_project.core.model.tiny_llama import load_tokenizer, save_tokenizer, train_tokenizer

    base = base_model(layout, params)
    if base is not None:
        tokenizer = load_tokenizer(base)
        shutil.rmtree(layout.tokenizer_dir, ignore_errors=True)
        save_tokenizer(tokenizer, layout.tokenizer_dir)
        return {"vocab_size": len(tokenizer), "base": base_model_spec(params),
                "chat_template": bool(getattr(tokenizer, "chat_template", None))}
    if uses_sources(params):
        texts = [text for r in own_data.searched_records(layout) for text in (r["prompt"], r["completion"]) if text]
    else:
        corpus = _corpus(layout)
        texts = [text for r in corpus.qa + corpus.general_knowledge for text in
                 [r["question"], *r["train_questions"], r["answer"], r["paraphrased_answer"], *r["perturbed_answers"]]]
    tokenizer = train_tokenizer(texts, params["tokenizer"]["vocab_size"], layout.tokenizer_dir)
    return {"vocab_size": len(tokenizer), "texts": len(texts)}


def _train_cached(layout: Layout, params: dict[str, Any], records: list[dict], out_dir: Path, desc: str) -> dict[str, Any]:
    """Train the model on `records`' training phrasings unless `out_dir` already holds the same content hash: a tiny
    Llama from scratch, or, with `model.base`, a fine-tune of the base model (TOFU's recipe for its target)."""
    from dagster_project.core.methods.runner import training_pairs
    from dagster_project.core.model.tiny_llama import TrainConfig, config_dict, load_tokenizer, train_model

    base = base_model(layout, params)
    model_config = None if base else tiny_model_config(params)
    train_config = TrainConfig(**params["train"])
    examples = training_pairs(records)
    key = fingerprint({"code": MODEL_CACHE_VERSION, "config": config_dict(model_config, train_config), "examples": examples,
                       "tokenizer": md5_file(layout.tokenizer_dir / "tokenizer.json"),
                       **({"base": weights_md5(base)} if base else {})})
    manifest_path = out_dir / "train_manifest.json"
    if manifest_path.exists() and any(out_dir.glob("*.safetensors")) and read_json(manifest_path)["cache_key"] == key:
        return {**read_json(manifest_path), "cached": True}
    result = train_model(load_tokenizer(layout.tokenizer_dir), examples, model_config, train_config, out_dir, desc=desc,
                         init_dir=base)
    write_json(manifest_path, {"cache_key": key, **without_run_history(result)})
    return {"cache_key": key, **result, "cached": False}


def run_target_model(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The model requests are unlearned from: fine-tuned here on the corpus or the train source (params `train:`),
    or, on the user's own data without `train:`, the user's already fine-tuned model as it is."""
    if uses_sources(params) and "train" not in params:
        return _copy_model(layout, params)
    records = (own_data.read_role(layout.source_dir("train")) if uses_sources(params)
               else target_training_records(_corpus(layout)))
    if not records:
        raise ValueError("params train: fine-tunes the model on the train source, and none is declared (sources.train)")
    return _train_cached(layout, params, records, layout.target_model_dir, "train target")


def _copy_model(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The user's model folder copied into the store (DVC versions it, adapters name it as their base)."""
    base = base_model(layout, params)
    if base is None:
        raise ValueError("params model: name the model fine-tuned on your data (model.path: <folder>, or model.base), "
                         "or add a train: section to fine-tune one here")
    key = fingerprint({"code": MODEL_CACHE_VERSION, "copied": weights_md5(base)})
    manifest_path = layout.target_model_dir / "train_manifest.json"
    if not (manifest_path.exists() and read_json(manifest_path)["cache_key"] == key):
        shutil.rmtree(layout.target_model_dir, ignore_errors=True)
        shutil.copytree(base, layout.target_model_dir, ignore=shutil.ignore_patterns("train_manifest.json"))
        write_json(manifest_path, {"cache_key": key, "copied_from": base_model_spec(params)})
    return {**read_json(manifest_path), "cached": False}


def run_retain_model(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    if uses_sources(params):  # the user's data has no retain model: its evaluation needs none (eval/documents.py)
        shutil.rmtree(layout.retain_model_dir, ignore_errors=True)
        write_json(layout.retain_model_dir / "train_manifest.json",
                   {"built": False, "reason": "a request on the user's own data is evaluated without a retain model"})
        return {"built": False}
    records = read_jsonl(layout.retain_set) + _corpus(layout).general_knowledge
    return _train_cached(layout, params, records, layout.retain_model_dir, "train retain")


def unlearning_retain_records(layout: Layout, params: dict[str, Any]) -> list[dict]:
    """What the retain term of unlearning keeps: the retain set, and on the embedded corpus the general knowledge
    (world facts, famous authors) that target and retain models both learned and that model utility measures."""
    if uses_sources(params):
        return read_jsonl(layout.retain_set)
    return read_jsonl(layout.retain_set) + _corpus(layout).general_knowledge


def _reveal_inputs(layout: Layout, params: dict[str, Any], request: ForgetRequest) -> tuple[list[str], Any, Any]:
    """(subject names, RevealConfig, ReleaseConfig) of a reveal request; one seed drives both."""
    from dagster_project.core.reveal.release import release_config
    from dagster_project.core.reveal.reveal import RevealConfig

    release = release_config(unlearning_hyperparameters(request, params))
    subjects = list(request.subject_names or dict.fromkeys(r["subject"] for r in read_jsonl(layout.forget_set)))
    return subjects, RevealConfig(**{**(params.get("reveal") or {}), "seed": release.seed}), release


def run_revealed_forget_set(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The forget set a `forget_data: reveal` request trains on: what the target model reveals about the
    subjects (NeuralUCB over the instruction pool). Arms and rewards go to MLflow (experiment `reveal`) as
    numbers and hashes. Other requests get an empty set."""
    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.reveal.reveal import reveal
    from dagster_project.core.reveal.scoring import load_encoder
    from dagster_project.core.tracking.mlflow_registry import log_run

    request = _request(layout)
    if layout.revealed_dir.exists():
        shutil.rmtree(layout.revealed_dir)
    if request.forget_data != "reveal":
        write_jsonl(layout.revealed_dir / "revealed.jsonl", [])
        write_json(layout.revealed_dir / "manifest.json", {"built": False})
        return {"built": False}
    subjects, config, _release = _reveal_inputs(layout, params, request)
    model, tokenizer = load_for_eval(layout.target_model_dir)
    encode, encoder_name = load_encoder()
    result = reveal(model, tokenizer, subjects, config, encode, encoder_name)
    write_jsonl(layout.revealed_dir / "revealed.jsonl", result.records)
    write_jsonl(layout.revealed_dir / "log" / "arms.jsonl", result.log)  # numbers and hashes only
    summary = {**result.summary(), "subjects": len(subjects)}
    write_json(layout.revealed_dir / "manifest.json", {"built": True, **summary, "config": asdict(config)})
    _client, run = log_run(
        layout.root, f"{request.id}/reveal", {f"reveal.{k}": v for k, v in asdict(config).items()},
        {k: v for k, v in summary.items() if isinstance(v, (int, float))},
        {"request_id": request.id, "subjects_sha256": sha256_text("\n".join(sorted(subjects))), "encoder": encoder_name},
        artifact_dirs={"reveal_log": layout.revealed_dir / "log"}, experiment="reveal",
        series={key: [row[key] for row in result.log] for key in ("arm", "relevance", "diversity", "reward")})
    return {"built": True, **summary, "mlflow_run_id": run.info.run_id,
            "md5_revealed": md5_file(layout.revealed_dir / "revealed.jsonl")}


def load_revealed(layout: Layout) -> Any:
    """The revealed forget set asset as a RevealResult (records, log and its mean relevance)."""
    from dagster_project.core.reveal.reveal import RevealResult

    manifest = read_json(layout.revealed_dir / "manifest.json")
    return RevealResult(read_jsonl(layout.revealed_dir / "revealed.jsonl"), read_jsonl(layout.revealed_dir / "log" / "arms.jsonl"),
                        manifest["responses"], manifest["mean_relevance"], encoder=manifest["encoder"])


SNAP_FILES = {"negative": "negative.jsonl", "hard_positives": "hard_positives.jsonl"}  # data key -> file


PARAPHRASE_REQUEST = "Rephrase this request in other words, keeping every name exactly as written: {}"


def snap_datasets(layout: Layout, params: dict[str, Any], seed: int, neighbours: int) -> dict[str, Any]:
    """SNAP's training sets for the request, hard positives answered by θ₀ (the target model), greedily; an
    instruction-tuned θ₀ (its tokenizer has a chat template) also rephrases the negative instructions.

    Content-addressed like the models: the same θ₀ bytes, data, seed and settings read `.cache/snap-data/` back
    instead of generating again (a methods table trains SNAP once per seed and mask)."""
    from dagster_project.core.data.snap import build_snap_datasets
    from dagster_project.core.eval.scoring import generate_answers, generate_texts
    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.model.text import format_prompt, has_chat_template

    forget, retain = read_jsonl(layout.forget_set), read_jsonl(layout.retain_set)
    key = fingerprint({"code": SNAP_DATA_CACHE_VERSION, "weights": weights_md5(layout.target_model_dir), "forget": forget,
                       "retain": retain, "seed": seed, "neighbours": neighbours, "eval": params["eval"],
                       "tokenizer": [md5_file(p) for p in sorted(layout.target_model_dir.glob("tokenizer*.json"))]})
    cached = layout.personal_cache_dir / "snap-data" / f"{key}.json"
    if cached.exists():
        return read_json(cached)
    model, tokenizer = load_for_eval(layout.target_model_dir)
    batch_size = params["eval"]["batch_size"]

    def answer(questions: list[str]) -> list[str]:
        return generate_answers(model, tokenizer, questions, params["eval"]["max_new_tokens"], batch_size)

    def paraphrase(instructions: list[str]) -> list[str]:
        prompts = [format_prompt(PARAPHRASE_REQUEST.format(i), tokenizer) for i in instructions]
        return generate_texts(model, tokenizer, prompts, 48, batch_size)

    data = build_snap_datasets(forget, retain, seed, neighbours, answer,
                               paraphrase=paraphrase if has_chat_template(tokenizer) else None)
    write_json(cached, data)
    return data


def run_snap_data(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """Negative instructions with obliterated responses, and hard positives; empty unless the method is SNAP."""
    from dagster_project.core.methods.registry import get_method

    request = _request(layout)
    data: dict[str, Any] = {"negative": [], "hard_positives": [], "scorer": "", "answered_by": "",
                            "blank_answers_dropped": 0, "paraphrased_instructions": 0}
    if request.method == "snap" and request.forget_data == "given":
        config = get_method("snap").config_cls.from_hyperparameters(unlearning_hyperparameters(request, params))
        data = snap_datasets(layout, params, config.seed, config.neighbours)
    for key, name in SNAP_FILES.items():
        write_jsonl(layout.snap_data_dir / name, data[key])
    manifest = {"built": bool(data["negative"]),
                **{k: data[k] for k in ("scorer", "answered_by", "blank_answers_dropped", "paraphrased_instructions")}}
    write_json(layout.snap_data_dir / "manifest.json", manifest)
    return {**manifest, "negative_pairs": len(data["negative"]), "hard_positives": len(data["hard_positives"]),
            "hard_positive_people": len({r["person_id"] for r in data["hard_positives"]}),
            **{f"md5_{name}": md5_file(layout.snap_data_dir / name) for name in SNAP_FILES.values()}}


MASK_FILE = "mask.safetensors"  # with mask.json beside it (attribution.manifest_path)


def wagle_attribution(layout: Layout, params: dict[str, Any], spec: dict[str, Any], out_dir: Path,
                      use_cache: bool = True) -> dict[str, Any]:
    """WAGLE for `spec` ({ratio, mu, random}) on the target model and the request's data, into `out_dir`:
    the packed mask (full-weight runs) and the LoRA target modules (LoRA runs) with a manifest.

    Content-addressed: a mask computed before for the same model bytes, data and spec (by any request or
    method) is copied from `.cache/attribution/` instead of recomputed."""
    from transformers import AutoModelForCausalLM

    from dagster_project.core import attribution as wagle
    from dagster_project.core.methods.runner import training_pairs
    from dagster_project.core.model.tiny_llama import load_tokenizer

    forget_pairs = training_pairs(read_jsonl(layout.forget_set))
    retain_pairs = training_pairs(unlearning_retain_records(layout, params))
    key = fingerprint({"code": ATTRIBUTION_CACHE_VERSION, "weights": weights_md5(layout.target_model_dir),
                       "forget": forget_pairs, "retain": retain_pairs, "spec": spec})
    cached = layout.cache_dir / "attribution" / key
    if not use_cache or not (cached / "manifest.json").exists():
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(layout.target_model_dir)  # float32: gradients as θ₀ sees them
        found = wagle.attribute(model, load_tokenizer(layout.tokenizer_dir), forget_pairs, retain_pairs, spec["ratio"],
                                mu=spec["mu"], random_baseline=spec["random"], batch_size=params["eval"]["batch_size"])
        saved = wagle.save_mask(found.mask, cached / MASK_FILE, metadata={"spec": spec})
        write_json(cached / "manifest.json", {
            "spec": spec, "mask_sha256": saved["sha256"], "kept": saved["kept"], "total": saved["total"],
            "lora_targets": found.lora_targets.target_modules, "lora_mass_share": found.lora_targets.mass_share})
        # beside the cached folder, not in it: versioned files carry no wall clock (stable md5s)
        write_json(cached.with_suffix(".timing.json"), {"attribution_seconds": round(time.perf_counter() - started, 2)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(cached, out_dir)
    return {**read_json(out_dir / "manifest.json"), **read_json(cached.with_suffix(".timing.json"))}


def run_weight_attribution(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """WAGLE's mask for requests with a `wagle` block; a manifest saying 'not built' otherwise."""
    request = _request(layout)
    if request.wagle is None:
        if layout.attribution_dir.exists():
            shutil.rmtree(layout.attribution_dir)
        write_json(layout.attribution_dir / "manifest.json", {"built": False})
        return {"built": False}
    manifest = wagle_attribution(layout, params, request.wagle.model_dump(), layout.attribution_dir)
    return {"built": True, "ratio": request.wagle.ratio, "random": request.wagle.random, "kept": manifest["kept"],
            "total": manifest["total"], "mask_sha256": manifest["mask_sha256"],
            "lora_targets": len(manifest["lora_targets"]), "attribution_seconds": manifest["attribution_seconds"]}


def wagle_inputs(attribution_dir: Path, mode: str) -> dict[str, Any]:
    """run_unlearning's keyword arguments for a WAGLE run: the mask (full) or the LoRA targets (lora)."""
    from dagster_project.core.attribution import load_mask

    if mode == "full":
        return {"mask": load_mask(attribution_dir / MASK_FILE)}
    return {"lora_targets": read_json(attribution_dir / "manifest.json")["lora_targets"]}


def load_snap_data(layout: Layout) -> dict[str, list[dict]]:
    return {key: read_jsonl(layout.snap_data_dir / name) for key, name in SNAP_FILES.items()}


def runner_options(params: dict[str, Any]) -> Any:
    """params.yaml `runner:` (how the training loop uses the hardware) as `RunnerOptions`, keys checked by name."""
    from dagster_project.core.methods.base import config_from_hyperparameters
    from dagster_project.core.methods.runner import RunnerOptions

    return config_from_hyperparameters(RunnerOptions, params.get("runner") or {}, section="runner")


def run_unlearned(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    from dagster_project.core.methods.runner import Checkpointing, run_unlearning
    from dagster_project.core.model.tiny_llama import load_tokenizer

    request = _request(layout)
    if layout.release_rounds_dir.exists():
        shutil.rmtree(layout.release_rounds_dir)
    if request.forget_data == "reveal":
        return _run_release(layout, params, request)
    write_json(layout.release_rounds_dir / "manifest.json", {"built": False})
    forget, retain = read_jsonl(layout.forget_set), unlearning_retain_records(layout, params)
    hyperparameters = unlearning_hyperparameters(request, params)
    method_data = load_snap_data(layout) if request.method == "snap" else None
    wagle = wagle_inputs(layout.attribution_dir, request.mode) if request.wagle else {}
    options = runner_options(params)
    # a run killed mid-training resumes from its last checkpoint when nothing that decides the result changed
    key = fingerprint({"code": CHECKPOINT_VERSION, "weights": weights_md5(layout.target_model_dir), "forget": forget,
                       "retain": retain, "method": request.method, "mode": request.mode,
                       "hyperparameters": hyperparameters, "method_data": method_data, "options": asdict(options),
                       "wagle": read_json(layout.attribution_dir / "manifest.json") if request.wagle else None})
    checkpoint = Checkpointing(layout.cache_dir / "checkpoints" / f"{layout.request_id}.pt", key,
                               every=params.get("checkpoint", {}).get("every_steps", Checkpointing.every))
    if options.processes > 1:  # data-parallel over GPUs (or gloo CPU processes); no checkpoints there
        from dagster_project.core.methods.distributed import run_distributed

        mask_file = layout.attribution_dir / MASK_FILE if request.wagle and request.mode == "full" else None
        result = run_distributed(options.processes, layout.target_model_dir, layout.tokenizer_dir, forget, retain,
                                 request.method, request.mode, hyperparameters, layout.unlearned_dir,
                                 method_data=method_data, mask_file=mask_file, lora_targets=wagle.get("lora_targets"),
                                 options=asdict(options))
    else:
        result = run_unlearning(layout.target_model_dir, load_tokenizer(layout.tokenizer_dir), forget, retain,
                                request.method, request.mode, hyperparameters, layout.unlearned_dir,
                                method_data=method_data, checkpoint=checkpoint, options=options, **wagle)
    write_json(layout.unlearned_dir / "unlearn_manifest.json", without_run_history(result))
    return result


def _run_release(layout: Layout, params: dict[str, Any], request: ForgetRequest) -> dict[str, Any]:
    """Reveal-and-Release rounds from the revealed forget set asset; the merged model goes to unlearned_dir."""
    from dagster_project.core.model.tiny_llama import load_tokenizer
    from dagster_project.core.reveal.release import release
    from dagster_project.core.reveal.scoring import load_encoder

    subjects, reveal_config, release_config = _reveal_inputs(layout, params, request)
    if layout.unlearned_dir.exists():
        shutil.rmtree(layout.unlearned_dir)
    encode, encoder_name = load_encoder()
    result = release(layout.target_model_dir, load_tokenizer(layout.tokenizer_dir), subjects, load_revealed(layout),
                     unlearning_retain_records(layout, params), request.method, release_config, reveal_config, encode,
                     layout.unlearned_dir, layout.release_rounds_dir, encoder_name)
    write_json(layout.release_rounds_dir / "manifest.json", {"built": True, "rounds_done": result["rounds_done"]})
    write_json(layout.unlearned_dir / "unlearn_manifest.json",
               {**without_run_history(result), "mode": request.mode, "forget_data": "reveal"})
    return {k: v for k, v in result.items() if k != "rounds"}


def cached_scores(layout: Layout, params: dict[str, Any], role: str, model_dir: Path, eval_sets: dict,
                  use_cache: bool = True) -> dict:
    """Model scores on the eval sets, cached by (model bytes, eval sets, eval params) so reruns skip inference;
    `use_cache=False` scores afresh (an audit's re-run) and leaves the cache as it was."""
    from dagster_project.core.eval.report import score_model
    from dagster_project.core.eval.standalone import cached_model_scores

    key = fingerprint({"code": SCORES_CACHE_VERSION, "weights": weights_md5(model_dir), "sets": eval_sets,
                       "eval": params["eval"], "role": role})
    return cached_model_scores(layout.personal_cache_dir / "scores" / f"{key}.json", model_dir, lambda model, tokenizer: score_model(
        model, tokenizer, eval_sets, batch_size=params["eval"]["batch_size"],
        max_new_tokens=params["eval"]["max_new_tokens"],
        relearn_steps=params["eval"]["relearn_steps"] if role == "unlearned" else 0, seed=params["eval"]["seed"]),
        use_cache)


def request_eval_sets(layout: Layout, params: dict[str, Any]) -> dict[str, list[dict]]:
    """The request's evaluation sets: its forget set, a seeded retain sample, world/real-world facts, holdout."""
    from dagster_project.core.eval.report import build_eval_sets

    return build_eval_sets(_corpus(layout), read_jsonl(layout.forget_set), read_jsonl(layout.retain_set), params["eval"])


def run_knowledge_probes(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """Cloze probes: on the user's own data every set (forget, retain, hard positives, utility, general knowledge,
    θ₀'s paraphrases); on the embedded corpus the general-knowledge set alone, when params `probes:` asks for it
    (a real model's knowledge, which invented people cannot show)."""
    from dagster_project.core.probes.build import ProbeConfig, general_probes, number_probes

    if uses_sources(params):
        return own_data.run_document_probes(layout, params)
    wanted = "probes" in params and ProbeConfig(**params["probes"] or {}).general_knowledge
    return own_data.write_probes(layout, number_probes(general_probes()) if wanted else [], {})


def evaluate_for_request(layout: Layout, params: dict[str, Any], model_dir: Path, use_cache: bool = True) -> dict[str, float]:
    """Any model's metrics on `layout`'s request, exactly as the evaluation stage reports the unlearned model
    (against that request's target and retain models), plus `utility_ratio` and `retain_fact_ratio` to the target's.

    What promotion gates, compliance runs and audits re-check: a champion re-evaluated on a request it was
    promoted for reproduces that request's numbers (deterministic on CPU)."""
    return request_report(layout, params, model_dir, use_cache)["models"]["unlearned"]["metrics"]


def request_report(layout: Layout, params: dict[str, Any], model_dir: Path, use_cache: bool = True) -> dict[str, Any]:
    """The evaluation report of `model_dir` as the request's unlearned model: the documents report on the user's
    own data; on the embedded corpus TOFU's (against the target and retain models), with general-knowledge
    probes where the request has them."""
    from dagster_project.core.eval.compare import ratios_to_target
    from dagster_project.core.eval.documents import add_probe_metrics
    from dagster_project.core.eval.report import build_report

    if uses_sources(params):
        return own_data.documents_evaluation(layout, params, model_dir, use_cache)
    eval_sets = request_eval_sets(layout, params)
    models = {"target": layout.target_model_dir, "retain": layout.retain_model_dir, "unlearned": model_dir}
    scores = {role: cached_scores(layout, params, role, path, eval_sets, use_cache=use_cache or role != "unlearned")
              for role, path in models.items()}
    report = build_report(eval_sets, scores)
    probes = read_jsonl(layout.probes_dir / "probes.jsonl") if (layout.probes_dir / "probes.jsonl").exists() else []
    if probes:
        add_probe_metrics(report, probes, {role: own_data.probe_scores(layout, params, role, path, probes,
                                                                       use_cache=use_cache or role != "unlearned")
                                           for role, path in models.items()})
    unlearned = report["models"]["unlearned"]["metrics"]
    unlearned.update(ratios_to_target(unlearned, report["models"]["target"]["metrics"]))
    return report


def run_evaluation(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    from dagster_project.core.eval.plots import plot_documents_report, plot_report

    started = time.perf_counter()
    report = request_report(layout, params, layout.unlearned_dir)
    write_json(layout.eval_dir / "report.json", report)
    (plot_documents_report if report.get("kind") == "documents" else plot_report)(report, layout.eval_dir / "metrics.png")
    return {**report["models"]["unlearned"]["metrics"], "seconds": round(time.perf_counter() - started, 2)}


def git_commit(root: Path) -> str:
    """HEAD's commit, with "+dirty" when tracked files differ from it (the code that ran is not that commit)."""
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    commit = result.stdout.strip()
    if not commit:
        return "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root, capture_output=True, check=False).returncode
    return commit + ("+dirty" if dirty else "")


# label -> (stage, path): every DVC-versioned input and output of a registered version, for its audit trail
AUDITED = {
    "request": ("forget_request", lambda l: l.request_json),
    "corpus": ("tofu_like_corpus", lambda l: l.corpus_dir),
    "forget_set": ("forget_set", lambda l: l.forget_set), "retain_set": ("retain_set", lambda l: l.retain_set),
    "target_model": ("target_model", lambda l: l.target_model_dir),
    "retain_model": ("retain_model", lambda l: l.retain_model_dir),
    "snap_data": ("snap_data", lambda l: l.snap_data_dir),
    "weight_attribution": ("weight_attribution", lambda l: l.attribution_dir),
    "revealed_forget_set": ("revealed_forget_set", lambda l: l.revealed_dir),
    "unlearned_adapter": ("unlearned_adapter", lambda l: l.unlearned_dir),
    "release_rounds": ("unlearned_adapter", lambda l: l.release_rounds_dir),
    "request_documents": ("forget_request", lambda l: l.request_documents),
    "collection": ("forget_set", lambda l: l.collection_dir),
    "cleaned_training_set": ("cleaned_training_set", lambda l: l.cleaned_dir),
    "knowledge_probes": ("knowledge_probes", lambda l: l.probes_dir),
    **{f"{role}_source": (f"{role}_source", lambda l, role=role: l.source_dir(role)) for role in ROLES},
}


def run_registered_model(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    from dagster_project.core import checks
    from dagster_project.core.audit.compute import compute_environment
    from dagster_project.core.audit.gates import check_gates, load_gates
    from dagster_project.core.audit.manifest import (
        CARD_FILE,
        MANIFEST_FILE,
        MANIFEST_FORMAT,
        environment_hash,
        manifest_sha256,
        model_card,
    )
    from dagster_project.core.tracking.dvc import locked_outs
    from dagster_project.core.tracking.mlflow_registry import (
        CANDIDATE,
        Registration,
        complete_registration,
        download_run_file,
        find_version,
        register_candidate,
        set_alias,
        tracking_uri,
    )

    request = _request(layout)
    report = read_json(layout.eval_dir / "report.json")
    # flat, stable MLflow names: "<scope>/<metric>" for the candidate, "<model>/<scope>/<metric>" for references
    scope = request.split or "request"
    candidate_metrics = report["models"]["unlearned"]["metrics"]
    metrics = {f"{scope}/{k}": v for k, v in candidate_metrics.items()}
    metrics.update({f"{model}/{scope}/{k}": v for model, body in report["models"].items() if model != "unlearned"
                    for k, v in body["metrics"].items()})
    if uses_sources(params):  # how the forget set was collected: counts only
        metrics.update(own_data.collection_metrics(layout))
    md5s = {label: locked_outs(layout.root, STAGES[stage].key(layout)).get(layout.rel(path(layout)), "uncommitted")
            for label, (stage, path) in AUDITED.items() if path(layout) in STAGES[stage].paths(layout, params)}
    hyperparameters = unlearning_hyperparameters(request, params)
    seeds = {"corpus": (params.get("corpus") or {}).get("seed"), "train": (params.get("train") or {}).get("seed"),
             "eval": params["eval"]["seed"], "unlearn": hyperparameters.get("seed", 0)}
    wagle = read_json(layout.attribution_dir / "manifest.json") if request.wagle else {}
    forget = read_jsonl(layout.forget_set)
    manifest = {
        "format": MANIFEST_FORMAT, "model_name": params["registry"]["model_name"],
        "request": {"id": request.id, "sha256": hashlib.sha256((layout.root / layout.request_file).read_bytes()).hexdigest(),
                    "subjects_sha256": sha256_text("\n".join(sorted(request.subject_names))), "split": request.split,
                    "method": request.method, "mode": request.mode, "forget_data": request.forget_data,
                    "wagle": request.wagle.model_dump() if request.wagle else None},
        "data": "sources" if uses_sources(params) else "corpus",
        "counts": {"forget_records": len(forget), "forget_subjects": len({r["person_id"] for r in forget})
                   if not uses_sources(params) else len(request.subject_names),
                   "documents": len(request.documents or []),
                   "record_ids": sum(len(ids) for ids in (request.records or {}).values())},
        "collection": read_json(layout.collection_dir / "report.json") if uses_sources(params) else None,
        "artifacts": md5s, "validation": checks.summarise(checks.request_checks(layout, params)),
        "metrics": candidate_metrics,
        "wagle_mask_sha256": wagle.get("mask_sha256"), "hyperparameters": hyperparameters, "seeds": seeds,
        "eval": params["eval"], "params": {k: v for k, v in params.items() if k != "request"},
        "git_commit": git_commit(layout.root), "environment_sha256": environment_hash(),
        "compute": compute_environment(),
    }
    # idempotent: the same request, artifacts, settings and metrics as an existing version re-use that version
    registration_key = fingerprint({k: manifest[k] for k in ("request", "artifacts", "metrics", "hyperparameters",
                                                             "seeds", "eval")})
    model_name = params["registry"]["model_name"]
    if layout.audit_dir.exists():
        shutil.rmtree(layout.audit_dir)
    existing = find_version(layout.root, model_name, "registration_key", registration_key)
    if existing is not None and existing.incomplete:
        # a registration killed before its version was complete: finish it from the record its run holds
        # (None: a version from before records existed, which cannot be completed: register a new one)
        existing = complete_registration(layout.root, existing)
    if existing is not None:
        # its audit files are the ones MLflow holds (recorded by the code that registered it)
        download_run_file(layout.root, existing.run_id, "audit", layout.audit_dir.parent / "_audit")
        shutil.move(layout.audit_dir.parent / "_audit" / "audit", layout.audit_dir)
        shutil.rmtree(layout.audit_dir.parent / "_audit")
        set_alias(layout.root, model_name, CANDIDATE, existing.version)
        registration = Registration(model_name, existing.version, CANDIDATE, existing.run_id, tracking_uri(layout.root))
        tags = existing.tags
    else:
        write_json(layout.audit_dir / MANIFEST_FILE, manifest)
        gates = check_gates(load_gates(params), candidate_metrics)
        (layout.audit_dir / CARD_FILE).write_text(model_card(manifest, gates, "Promotion gates at registration "
                                                             "(earlier requests in force are checked at promotion)"))
        tags = {"request_id": request.id, "method": request.method, "mode": request.mode,
                "git_commit": manifest["git_commit"], "registration_key": registration_key,
                "wagle": json.dumps(manifest["request"]["wagle"]) if request.wagle else "none",
                "wagle_mask_sha256": wagle.get("mask_sha256", "none"), "forget_data": request.forget_data,
                "subjects_sha256": manifest["request"]["subjects_sha256"], "split": request.split or "",
                "seeds": json.dumps(seeds, sort_keys=True), "environment_sha256": manifest["environment_sha256"],
                "compute": json.dumps(manifest["compute"], sort_keys=True),
                "audit_manifest_sha256": manifest_sha256(layout.audit_dir / MANIFEST_FILE),
                "gates_at_registration": "passed" if all(g.passed for g in gates) else "failed",
                "data": manifest["data"], **{f"dvc_md5.{k}": v for k, v in md5s.items()}}
        registration = register_candidate(
            layout.root, model_name, request.id,
            params={"method": request.method, "mode": request.mode, **{f"hp.{k}": v for k, v in hyperparameters.items()}},
            metrics=metrics, version_metrics=candidate_metrics, tags=tags,
            artifact_dirs={"model": layout.unlearned_dir, "evaluation": layout.eval_dir, "audit": layout.audit_dir,
                           # counts, a histogram and hashed ids: no names, no text
                           **({"collection": layout.collection_dir} if uses_sources(params) else {})},
        )
    record = {**registration.to_dict(), "dvc_md5": md5s, "metrics": candidate_metrics, "reused": existing is not None,
              "audit_manifest_sha256": tags["audit_manifest_sha256"], "gates_at_registration": tags["gates_at_registration"]}
    write_json(layout.registry_record, record)
    # registered: the caches holding the request's text have served their purpose (docs/operations.md, retention)
    from dagster_project.core.retention import clear_personal_caches

    clear_personal_caches(layout)
    return record


def _source_files(role: str, layout: Layout, params: dict[str, Any]) -> list[Path]:
    """A role's declared files inside the root (dvc.yaml deps; a file outside the root is hashed in its manifest)."""
    from dagster_project.core.sources.load import declared_sources, source_path

    paths = [source_path(spec, layout.root) for spec in declared_sources(params).get(role, [])]
    return [p for p in paths if p.resolve().is_relative_to(layout.root)]


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in [
        Stage("tofu_like_corpus", run_corpus, lambda l: [l.corpus_dir], params=("corpus",), shared=True),
        # a source stage writes nothing on the embedded corpus: no outs, so no DVC stage and nothing to commit
        *(Stage(f"{role}_source", functools.partial(own_data.run_source, role=role), lambda l: [], params=("sources",),
                inputs=functools.partial(_source_files, role), shared=True,
                sources_outs=lambda l, role=role: [l.source_dir(role)]) for role in ROLES),
        Stage("forget_request", run_forget_request, lambda l: [l.request_json, l.request_documents],
              params=("requests_dir", "collection"), inputs=lambda l, p: [l.root / l.request_file]),
        Stage("forget_set", run_forget_set, lambda l: [l.forget_set], params=("collection",),
              sources_outs=lambda l: [l.forget_set.parent / own_data.SCORES_FILE, l.collection_dir]),
        Stage("retain_set", run_retain_set, lambda l: [l.retain_set], params=("collection", "retain")),
        Stage("cleaned_training_set", run_cleaned_training_set, lambda l: [l.cleaned_dir], params=("sources",)),
        Stage("tokenizer", run_tokenizer, lambda l: [l.tokenizer_dir], params=("tokenizer", "model"), shared=True),
        Stage("target_model", run_target_model, lambda l: [l.target_model_dir], params=("model", "train"), shared=True),
        Stage("retain_model", run_retain_model, lambda l: [l.retain_model_dir], params=("model", "train")),
        Stage("snap_data", run_snap_data, lambda l: [l.snap_data_dir], params=("unlearn", "eval")),
        Stage("revealed_forget_set", run_revealed_forget_set, lambda l: [l.revealed_dir], params=("reveal", "release")),
        Stage("weight_attribution", run_weight_attribution, lambda l: [l.attribution_dir], params=("eval",)),
        Stage("unlearned_adapter", run_unlearned, lambda l: [l.unlearned_dir, l.release_rounds_dir],
              params=("unlearn", "reveal", "release"), slot=TRAINING),
        Stage("knowledge_probes", run_knowledge_probes, lambda l: [l.probes_dir], params=("probes", "eval")),
        Stage("evaluation", run_evaluation, lambda l: [l.eval_dir], params=("eval",)),
        Stage("registered_model", run_registered_model, lambda l: [l.registry_record, l.audit_dir],
              params=("registry", "unlearn", "promotion"),
              cache=False),
    ]
}


def run_stage(name: str, layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name].run(layout, params)
