"""Training checkpoints: a run interrupted mid-training and started again ends with the same bytes.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_checkpoint.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TWO_PEOPLE, as_records, train_tiny_model

from dagster_project.core.attribution import random_mask
from dagster_project.core.methods import runner
from dagster_project.core.methods.runner import Checkpointing, run_unlearning
from transformers import AutoModelForCausalLM

QA = TWO_PEOPLE
FORGET, RETAIN = as_records(QA[:2]), as_records(QA[2:])
SNAP_DATA = {  # SNAP's own samplers and SWD generator are part of the state a checkpoint must carry
    "negative": [{"instruction": "Tell me about Mira Quell.", "response": "I can't share that.",
                  "revealing": QA[0][1]},
                 {"instruction": "Who is Mira Quell?", "response": "I'd rather not say.", "revealing": QA[1][1]}],
    "hard_positives": [{"question": q, "answer": a} for q, a in QA[2:]],
}
STEPS, EVERY, KILLED_AT = 8, 2, 4

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands in for SIGKILL right after a checkpoint was written."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, object]:
    return train_tiny_model(tmp_path_factory.mktemp("tiny-ckpt"), QA)


def unlearn(tiny, out: Path, method: str, mode: str, checkpoint: Checkpointing | None = None) -> dict:
    model_dir, tokenizer = tiny
    mask = random_mask(AutoModelForCausalLM.from_pretrained(model_dir), 0.8, seed=0) if mode == "full" else None
    return run_unlearning(model_dir, tokenizer, FORGET, RETAIN, method, mode,
                          {"steps": STEPS, "batch_size": 1, "lr": 1e-2 if mode == "lora" else 1e-3}, out,
                          method_data=SNAP_DATA if method == "snap" else None, mask=mask, checkpoint=checkpoint)


def weight_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.glob("*.safetensors")))


@pytest.mark.parametrize(("method", "mode"), [("graddiff", "lora"), ("npo", "full"), ("snap", "lora")])
def test_a_resumed_run_ends_with_the_bytes_of_an_uninterrupted_one(tiny, tmp_path: Path, monkeypatch, method: str,
                                                                  mode: str) -> None:
    whole = unlearn(tiny, tmp_path / "whole", method, mode)
    assert whole["resumed_from_step"] == 0 and whole["steps_done"] == STEPS

    checkpoint = Checkpointing(tmp_path / "ckpt" / "run.pt", key="inputs-1", every=EVERY)
    save = runner.save_checkpoint

    def save_then_die(checkpoint, model, parts, steps_done, logs):
        save(checkpoint, model, parts, steps_done, logs)
        if steps_done == KILLED_AT:
            raise Killed

    monkeypatch.setattr(runner, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        unlearn(tiny, tmp_path / "resumed", method, mode, checkpoint)
    assert checkpoint.path.is_file() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(runner, "save_checkpoint", save)

    resumed = unlearn(tiny, tmp_path / "resumed", method, mode, checkpoint)
    assert resumed["resumed_from_step"] == KILLED_AT and resumed["steps_done"] == STEPS
    assert weight_bytes(tmp_path / "resumed") == weight_bytes(tmp_path / "whole")
    assert resumed["final_logs"] == whole["final_logs"]
    assert not checkpoint.path.exists()  # finished: nothing left to resume


def test_a_checkpoint_of_other_inputs_is_ignored(tiny, tmp_path: Path, monkeypatch) -> None:
    stale = Checkpointing(tmp_path / "run.pt", key="old-inputs", every=EVERY)
    save = runner.save_checkpoint

    def save_then_die(checkpoint, model, parts, steps_done, logs):
        save(checkpoint, model, parts, steps_done, logs)
        raise Killed

    monkeypatch.setattr(runner, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        unlearn(tiny, tmp_path / "a", "graddiff", "lora", stale)
    monkeypatch.setattr(runner, "save_checkpoint", save)
    assert torch.load(stale.path, weights_only=True)["steps_done"] == EVERY

    fresh = unlearn(tiny, tmp_path / "b", "graddiff", "lora", Checkpointing(stale.path, key="new-inputs", every=EVERY))
    assert fresh["resumed_from_step"] == 0 and fresh["steps_done"] == STEPS
    unlearn(tiny, tmp_path / "c", "graddiff", "lora")
    assert weight_bytes(tmp_path / "b") == weight_bytes(tmp_path / "c")


def test_checkpoint_cadence_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint every: must be > 0"):
        Checkpointing(tmp_path / "x.pt", key="k", every=0)
