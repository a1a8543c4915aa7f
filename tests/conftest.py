"""Shared fixtures: a micro pipeline root (tiny corpus, tiny model) usable in seconds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# DVC attaches its log handler to the streams current when `dvc` is first imported; import it before any
# test's capsys swaps them, or a later test's DVC log line hits that test's closed capture
import dvc.repo  # noqa: F401, E402

REPO = Path(__file__).resolve().parents[1]

MICRO_PARAMS = {
    "request": "data/requests/micro.yaml",
    "requests_dir": "data/requests",
    "corpus": {"n_people": 12, "n_holdout": 2, "n_world_facts": 6, "n_real_world": 4, "seed": 0},
    "tokenizer": {"vocab_size": 400},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_positions": 128},
    "train": {"epochs": 1, "schedule_epochs": 1, "lr": 0.003, "batch_size": 32, "warmup_ratio": 0.1,
              "weight_decay": 0.0, "seed": 0},
    "unlearn": {"graddiff": {"steps": 3, "batch_size": 4}},
    "reveal": {"rounds": 6, "samples": 2, "max_new_tokens": 8},
    "release": {"rounds": 1, "steps": 2, "batch_size": 4},
    "eval": {"retain_sample": 12, "batch_size": 32, "max_new_tokens": 8, "relearn_steps": 2, "seed": 0},
    "registry": {"model_name": "micro-model"},
    "promotion": {"forget_quality_min": 0.05, "utility_ratio_min": 0.95, "gibberish_rate_max": 0.25,
                  "refusal_rate_max": 1.0, "regression_tolerance": 0.05},
}

MICRO_REQUEST = "id: micro\nsplit: forget10\nmethod: graddiff\nmode: lora\nhyperparameters:\n  seed: 0\n"


@pytest.fixture
def micro_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh pipeline root: params, one request, a DVC repo with a local remote, the generated dvc.yaml."""
    from dagster_project.core.layout import Layout
    from dagster_project.core.tracking.dvc import ensure_repo
    from dagster_project.dvc_yaml import write_or_check

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "root"
    (root / "data" / "requests").mkdir(parents=True)
    (root / "data" / "requests" / "micro.yaml").write_text(MICRO_REQUEST)
    (root / "params.yaml").write_text(yaml.safe_dump(MICRO_PARAMS))
    ensure_repo(root, remote_url=str(tmp_path / "dvc-remote"))
    write_or_check(root, MICRO_PARAMS, check=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Pin torch to one thread: a 32-wide model gains nothing from intra-op threads, and on a busy 2-core
    machine their barriers make every matmul wait for a time slice (measured ~20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# what the `unlearn_request` job runs: everything but the governance assets (promotion, compliance)
PIPELINE = ("*", "-champion", "-champion_compliance")


def materialize_request(root: Path, request_id: str | None, selection=PIPELINE, dvc_commit: bool = True,
                        raise_on_error: bool = True, instance=None):
    """Materialise `selection` in-process for partition `request_id` (added to the instance first), as a
    sensor-launched run would; `request_id=None` for unpartitioned selections (compliance)."""
    import dagster as dg

    from dagster_project.definitions import defs
    from dagster_project.defs.resources import PipelineResource

    instance = instance or dg.DagsterInstance.ephemeral()
    if request_id:
        instance.add_dynamic_partitions("requests", [request_id])
    definitions = defs()
    if selection == PIPELINE:
        selection = dg.AssetSelection.all() - dg.AssetSelection.assets("champion", "champion_compliance")
    return dg.materialize([*definitions.assets, *definitions.asset_checks], selection=selection,
                          partition_key=request_id, instance=instance, raise_on_error=raise_on_error,
                          resources={"pipeline": PipelineResource(root=str(root), dvc_commit=dvc_commit)})


def copy_request(root: Path, text: str, name: str) -> Path:
    path = root / "data" / "requests" / name
    path.write_text(text)
    return path


def train_tiny_model(out: Path, qa: list[tuple[str, str]], num_layers: int = 1, epochs: int = 25,
                     repeat: int = 8) -> tuple[Path, object]:
    """A 32-wide tiny Llama with its own tokenizer that has memorised `qa`: (model folder, tokenizer)."""
    from dagster_project.core.model.text import format_prompt
    from dagster_project.core.model.tiny_llama import TinyLlamaConfig, TrainConfig, train_model, train_tokenizer

    tokenizer = train_tokenizer([t for pair in qa for t in pair] + [format_prompt(q) for q, _ in qa], 300, out / "tok")
    train_model(tokenizer, qa * repeat, TinyLlamaConfig(hidden_size=32, num_layers=num_layers, num_heads=2,
                                                        intermediate_size=64),
                TrainConfig(epochs=epochs, schedule_epochs=epochs, lr=1e-2, batch_size=8), out / "model")
    return out / "model", tokenizer


# two people, two facts each: the memorised toy data of the method and runner tests
TWO_PEOPLE = [("Where was Mira Quell born?", "Mira Quell was born in Saltmarsh."),
              ("What does Mira Quell do?", "Mira Quell works as a glassblower."),
              ("Where was Tobin Sarr born?", "Tobin Sarr was born in Ironvale."),
              ("What does Tobin Sarr do?", "Tobin Sarr works as a ferryman.")]


def as_records(pairs: list[tuple[str, str]]) -> list[dict]:
    """(question, answer) pairs as the QA records run_unlearning takes (one training phrasing each)."""
    return [{"train_questions": [q], "answer": a} for q, a in pairs]


# the user's own data in miniature: six customers' notes (free text) and chats, other customers never trained on
CUSTOMERS = [("Marta Kowalski", "marta.k@example.com", "CUS-40217", "Gdansk", "58123"),
             ("Jon Brandt", "jon.brandt@example.org", "CUS-51022", "Bremen", "77120"),
             ("Anna Weber", "anna.weber@example.net", "CUS-33810", "Leipzig", "99812"),
             ("Pavel Novak", "p.novak@example.com", "CUS-27744", "Brno", "41207"),
             ("Lena Fischer", "lena.f@example.org", "CUS-61530", "Kassel", "30418"),
             ("Omar Haddad", "omar.h@example.net", "CUS-70921", "Lyon", "86254")]
BYO_PARAMS = {
    "request": "data/requests/byo.yaml", "requests_dir": "data/requests",
    "sources": {"train": [{"path": "data/sources/notes.jsonl"},
                          {"path": "data/sources/chats.jsonl", "fields": {"id": "ticket", "messages": "messages"}}],
                "nonmember": {"path": "data/sources/holdout.jsonl"}, "utility": {"path": "data/sources/faq.jsonl"}},
    "tokenizer": {"vocab_size": 400},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_positions": 128},
    "train": {"epochs": 2, "schedule_epochs": 2, "lr": 0.003, "batch_size": 8, "warmup_ratio": 0.1, "weight_decay": 0.0,
              "seed": 0},
    "unlearn": {"graddiff": {"steps": 3, "batch_size": 4}, "npo": {"steps": 3, "batch_size": 4}},
    "reveal": {"rounds": 4, "samples": 2, "max_new_tokens": 8, "relevance_threshold": 0.0},
    "release": {"rounds": 1, "steps": 2, "batch_size": 4, "stop_relevance": 0.0},
    "retain": {"sample": 10, "hard_positives": 4},
    "probes": {"paraphrases": 0, "max_per_set": 20},
    "eval": {"retain_sample": 12, "batch_size": 32, "max_new_tokens": 8, "relearn_steps": 2, "seed": 0},
    "registry": {"model_name": "byo-micro"},
    "promotion": {"gibberish_rate_max": 0.25, "regression_tolerance": 0.05},
}
BYO_REQUEST = {"id": "byo", "subjects": [{"name": "Marta Kowalski", "aliases": ["marta.k@example.com", "CUS-40217"]}],
               "method": "graddiff", "hyperparameters": {"seed": 0}}


def byo_records() -> dict[str, list[dict]]:
    """File name -> rows of the micro sources (CUSTOMERS)."""
    notes, chats = [], []
    for i, (name, email, cid, city, order) in enumerate(CUSTOMERS):
        notes.append({"id": f"N-{i}01", "text": f"Call note: {name} ({cid}) called about order {order}. The parcel "
                                                f"was sent to {city} on Monday."})
        notes.append({"id": f"N-{i}02", "text": f"Email from {email}: the kettle in order {order} arrived broken. "
                                                f"Replacement approved for {city}."})
        chats.append({"ticket": f"T-{i}03", "messages": [
            {"role": "user", "content": f"Hi, this is {name.split()[0]}. Where is my order {order}?"},
            {"role": "assistant", "content": f"Hello {name}, order {order} left our warehouse and will reach {city} "
                                             f"by Friday."}]})
    holdout = [{"text": f"Call note: Customer CUS-9{i}000 asked about order 1{i}555 going to Hamburg on Tuesday."}
               for i in range(6)]
    faq = [{"text": f"Policy {i}: refunds for damaged kettles are paid within 14 days to customers in Germany."}
           for i in range(4)]
    return {"notes.jsonl": notes, "chats.jsonl": chats, "holdout.jsonl": holdout, "faq.jsonl": faq}


@pytest.fixture
def byo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pipeline root on the user's own data (BYO_PARAMS): sources, one request, DVC, dvc.yaml."""
    import json

    from dagster_project.core.tracking.dvc import ensure_repo
    from dagster_project.dvc_yaml import write_or_check

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "root"
    for name, rows in byo_records().items():
        (root / "data" / "sources").mkdir(parents=True, exist_ok=True)
        (root / "data" / "sources" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "data" / "requests").mkdir(parents=True)
    (root / "data" / "requests" / "byo.yaml").write_text(yaml.safe_dump(BYO_REQUEST))
    (root / "params.yaml").write_text(yaml.safe_dump(BYO_PARAMS))
    ensure_repo(root, remote_url=str(tmp_path / "dvc-remote"))
    write_or_check(root, BYO_PARAMS, check=False)
    return root


__all__ = ["BYO_PARAMS", "BYO_REQUEST", "CUSTOMERS", "MICRO_PARAMS", "MICRO_REQUEST", "TWO_PEOPLE", "as_records",
           "byo_records", "copy_request", "shutil", "train_tiny_model"]
