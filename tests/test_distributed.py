"""Data-parallel unlearning (replicated or FSDP-sharded) on 2 CPU processes (gloo) matches one process.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_distributed.py

Stated tolerance, for replicated and for FSDP-sharded processes: losses within 1e-6 and updated weights
within 1e-5 (1 % of the learning rate), when both processes' shares hold as many answer tokens. (Token-mean
losses averaged over processes weight each share equally, so shares of unequal token counts give a slightly
different, equally valid, mean: what DistributedDataParallel does too.)
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from conftest import materialize_request, train_tiny_model
from safetensors.torch import load_file

from dagster_project.core.methods.distributed import run_distributed
from dagster_project.core.methods.runner import run_unlearning
from dagster_project.core.model.text import IGNORE_INDEX, collate_pairs

ANSWERS = [" ".join(words) + "." for words in itertools.permutations(["amber", "birch", "cedar", "delta"])][:8]
QA = [(f"Question number {i} about someone?", answer) for i, answer in enumerate(ANSWERS)]
FORGET = [{"train_questions": [q], "answer": a} for q, a in QA[:4]]
RETAIN = [{"train_questions": [q], "answer": a} for q, a in QA[4:]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("ddp")
    model_dir, tokenizer = train_tiny_model(root, QA, epochs=3)
    return model_dir, root / "tok", tokenizer


@pytest.mark.parametrize(("method", "mode", "sharding"), [("graddiff", "full", "none"), ("npo", "lora", "none"),
                                                           ("npo", "full", "fsdp")])
def test_two_gloo_processes_take_the_single_process_step(tiny, tmp_path: Path, method: str, mode: str,
                                                         sharding: str) -> None:
    """Replicated (gradients all-reduced) or sharded (FSDP2: weights, gradients, AdamW state and NPO's frozen θ₀
    split over the processes, gathered to save): the same step as one process."""
    model_dir, tokenizer_dir, tokenizer = tiny
    counts = {int((collate_pairs(tokenizer, [q], [a])["labels"] != IGNORE_INDEX).sum()) for q, a in QA}
    assert len(counts) == 1  # every answer has the same token count, so both shares weigh the same
    hyperparameters = {"steps": 1, "batch_size": 4, "lr": 1e-3}
    single = run_unlearning(model_dir, tokenizer, FORGET, RETAIN, method, mode, hyperparameters, tmp_path / "one")
    double = run_distributed(2, model_dir, tokenizer_dir, FORGET, RETAIN, method, mode, hyperparameters, tmp_path / "two",
                             options={"sharding": sharding})
    assert single["processes"] == 1 and double["processes"] == 2
    assert double["final_logs"].keys() == single["final_logs"].keys()
    assert all(abs(double["final_logs"][k] - v) <= 1e-6 for k, v in single["final_logs"].items())
    name = "model.safetensors" if mode == "full" else "adapter_model.safetensors"
    one, two = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
    base = load_file(model_dir / "model.safetensors")
    assert one.keys() == two.keys()
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    if mode == "full":  # the step moved the weights by about the learning rate: the match is not trivial
        assert max((one[k] - base[k]).abs().max().item() for k in one) >= 5e-4


def test_the_logs_are_averaged_on_the_training_device(monkeypatch) -> None:
    """On GPUs the process group is NCCL alone, which has no CPU tensors: the logs' all-reduce must use the
    device the model trains on (here the meta device stands in for a GPU: it records where the buffer was)."""
    import torch

    from dagster_project.core.methods.runner import average_logs

    reduced = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor: reduced.append(tensor.device))
    with pytest.raises(NotImplementedError, match="meta tensor"):  # a meta tensor has no values to read back
        average_logs({"forget_nll": 2.0, "retain_loss": 1.0}, 2, torch.device("meta"))
    assert reduced == [torch.device("meta")]
    assert average_logs({"forget_nll": 2.0, "retain_loss": 1.0}, 2, torch.device("cpu")) == {
        "forget_nll": 1.0, "retain_loss": 0.5}  # the fake all-reduce sums nothing: one process's share


def test_sharding_needs_several_processes() -> None:
    from dagster_project.core.methods.runner import RunnerOptions

    with pytest.raises(ValueError, match="fsdp shards over processes; set runner.processes to 2 or more"):
        RunnerOptions(sharding="fsdp")
    with pytest.raises(ValueError, match="runner.sharding: expected one of"):
        RunnerOptions(sharding="zero3", processes=2)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer_dir, _ = tiny
    with pytest.raises(RuntimeError, match="failed"):
        run_distributed(2, model_dir, tokenizer_dir, FORGET, RETAIN, "graddiff", "lora",
                        {"steps": 1, "batch_size": 3}, tmp_path / "odd")


@pytest.mark.e2e
def test_the_unlearning_asset_runs_data_parallel_when_runner_processes_is_2(micro_root: Path, one_thread) -> None:
    params = yaml.safe_load((micro_root / "params.yaml").read_text())
    params["runner"] = {"processes": 2}
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    result = materialize_request(micro_root, "micro")
    assert result.success
    assert result.asset_materializations_for_node("unlearned_adapter")[0].metadata["processes"].value == 2
