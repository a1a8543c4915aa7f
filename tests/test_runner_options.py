"""RunnerOptions: how the loop uses the hardware changes speed and memory, not what is learned.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_runner_options.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TWO_PEOPLE, as_records, train_tiny_model
from transformers import AutoModelForCausalLM

from dagster_project.core.methods.rmu import capture_output
from dagster_project.core.methods.runner import BatchSampler, RunnerOptions, UnlearningLoop
from dagster_project.core.model.padding_free import PaddingFree, as_padded, pack, unpack
from dagster_project.core.model.text import collate_pairs
from dagster_project.core.stages import runner_options

QA = TWO_PEOPLE
FORGET, RETAIN = as_records(QA[:2]), as_records(QA[2:])

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, object]:
    return train_tiny_model(tmp_path_factory.mktemp("tiny-options"), QA, epochs=2)


def test_length_buckets_serve_the_same_pairs_grouped_by_length() -> None:
    pairs = [(f"q{i}", "a" * (i * 7 % 23)) for i in range(24)]  # lengths in scrambled order
    plain, bucketed = BatchSampler(pairs, 4, seed=3), BatchSampler(pairs, 4, seed=3, buckets=3)
    drawn_plain = [p for _ in range(3) for p in plain.next()]
    batches = [bucketed.next() for _ in range(3)]
    assert sorted(p for b in batches for p in b) == sorted(drawn_plain)  # the same 12 pairs, regrouped
    spans = sorted((min(map(len, map("".join, b))), max(map(len, map("".join, b)))) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))  # batches do not overlap in length
    state = bucketed.state_dict()
    again = BatchSampler(pairs, 4, seed=99, buckets=3)
    again.load_state_dict(state)
    assert [again.next() for _ in range(5)] == [bucketed.next() for _ in range(5)]


def test_gradient_checkpointing_gives_the_same_step(tiny) -> None:
    model_dir, tokenizer = tiny
    results = []
    for checkpointing in (False, True):
        loop = UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, "graddiff", "full", {"steps": 2, "batch_size": 2},
                              options=RunnerOptions(gradient_checkpointing=checkpointing))
        logs = [loop.step() for _ in range(2)]
        results.append((logs, {n: p.detach().clone() for n, p in loop.model.named_parameters()}))
    (logs_a, weights_a), (logs_b, weights_b) = results
    assert logs_a[-1]["forget_nll"] == pytest.approx(logs_b[-1]["forget_nll"], rel=1e-5)
    assert max((weights_a[n] - weights_b[n]).abs().max().item() for n in weights_a) < 1e-5


def test_options_are_checked_by_name_and_value() -> None:
    assert runner_options({}) == RunnerOptions()
    assert runner_options({"runner": {"length_buckets": 4}}).length_buckets == 4
    with pytest.raises(ValueError, match="runner.compiled: unknown for RunnerOptions"):
        runner_options({"runner": {"compiled": True}})
    with pytest.raises(ValueError, match="runner.attention: expected one of"):
        RunnerOptions(attention="flash")
    with pytest.raises(ValueError, match="runner.length_buckets: must be >= 1"):
        RunnerOptions(length_buckets=0)


def test_flex_attention_is_refused_for_training_on_the_cpu(tiny) -> None:
    model_dir, tokenizer = tiny
    with pytest.raises(ValueError, match="flex_attention cannot train on this machine .cpu."):
        UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, "graddiff", "lora", {"steps": 1, "batch_size": 2},
                       options=RunnerOptions(attention="flex_attention", padding_free=True))


def test_the_loop_counts_the_tokens_it_trains_on(tiny) -> None:
    model_dir, tokenizer = tiny
    loop = UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, "graddiff", "lora", {"steps": 1, "batch_size": 2})
    loop.step()
    from dagster_project.core.model.text import collate_pairs

    expected = sum(int(collate_pairs(tokenizer, [q for q, _ in part], [a for _, a in part])["attention_mask"].sum())
                   for part in (QA[:2], QA[2:]))
    assert loop.tokens == expected and torch.isfinite(torch.tensor(loop.logs["forget_nll"]))


def test_a_full_run_keeps_theta0_only_for_methods_that_read_it(tiny) -> None:
    """A frozen copy of the model costs 4 bytes a parameter: GradDiff with an NLL retain term does without."""
    model_dir, tokenizer = tiny
    kept = {}
    for method, extra in (("graddiff", {}), ("graddiff", {"retain_loss": "kl"}), ("npo", {}), ("gradascent", {}),
                          ("idkdpo", {}), ("rmu", {})):
        loop = UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, method, "full", {"steps": 1, "batch_size": 2, **extra})
        loop.step()  # a method that reads θ₀ without a copy would fail here
        kept[method + ("+kl" if extra else "")] = hasattr(loop.model, "_unlearn_reference")
    assert kept == {"graddiff": False, "graddiff+kl": True, "npo": True, "gradascent": False, "idkdpo": True,
                    "rmu": True}


def test_pack_and_unpack_invert_each_other_on_a_right_padded_batch() -> None:
    ids = torch.tensor([[5, 6, 7], [8, 0, 0], [9, 4, 0]])
    mask = (ids != 0).long()
    packed, positions = pack(ids, mask)
    assert packed.tolist() == [[5, 6, 7, 8, 9, 4]] and positions.tolist() == [[0, 1, 2, 0, 0, 1]]
    hidden = torch.arange(6.0).view(1, 6, 1).repeat(1, 1, 2)  # (1, tokens, 2)
    assert unpack(hidden, mask)[..., 0].tolist() == [[0, 1, 2], [3, 0, 0], [4, 5, 0]]
    padded = unpack(hidden, mask)
    assert as_padded(padded, mask) is padded and torch.equal(as_padded(hidden, mask), padded)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flex_attention"])  # flex: forward only on the CPU
def test_a_padding_free_forward_packs_the_batch_and_gives_the_padded_logits(tiny, attention: str) -> None:
    model_dir, tokenizer = tiny
    batch = collate_pairs(tokenizer, [q for q, _ in QA], [a for _, a in QA])
    real = batch["attention_mask"].bool()
    assert not real.all()  # the batch has padding to leave out
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention).eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        padded = model(**inputs).logits
        PaddingFree(model)
        with capture_output(model.model.layers[0]) as caught:
            packed = model(**inputs).logits
    assert tuple(caught[0].shape[:2]) == (1, int(real.sum()))  # the network ran on the real tokens only
    assert packed.shape == padded.shape and bool((packed[~real] == 0).all())
    assert (packed[real] - padded[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize(("method", "mode"), [("graddiff", "full"), ("npo", "lora"), ("rmu", "full")])
def test_padding_free_training_takes_the_same_steps(tiny, method: str, mode: str) -> None:
    """Same losses and, to float rounding, the same weights: only where the work is done changes (NPO and RMU
    also run θ₀, the disabled adapter or the frozen copy, padding-free)."""
    model_dir, tokenizer = tiny
    results = []
    for padding_free in (False, True):
        loop = UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, method, mode, {"steps": 3, "batch_size": 2},
                              options=RunnerOptions(padding_free=padding_free))
        start = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
        logs = [loop.step() for _ in range(3)]
        moved = {n: p.detach() - start[n] for n, p in loop.model.named_parameters() if p.requires_grad}
        results.append((logs, moved))
    (logs_a, moved_a), (logs_b, moved_b) = results
    for a, b in zip(logs_a, logs_b):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    largest = max(m.abs().max().item() for m in moved_a.values())
    assert largest > 0 and max((moved_a[n] - moved_b[n]).abs().max().item() for n in moved_a) < 0.01 * largest
