"""WAGLE attribution: the score by hand, the exact global mask, mask files, and a real masked run.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_wagle.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dagster_project.core.attribution import wagle
from dagster_project.core.attribution.wagle import (
    accumulate_gradients, attribution_scores, global_threshold, kept_count, load_mask, lora_targets_from_attribution,
    manifest_path, mask_fingerprint, pack_mask, pair_batches, random_mask, save_mask, unpack_mask, wagle_mask,
)
from dagster_project.core.methods.runner import run_unlearning
from dagster_project.core.model.text import format_prompt
from dagster_project.core.model.tiny_llama import TinyLlamaConfig, build_model, train_tokenizer

QA = [("Where was Mira Quell born?", "Mira Quell was born in Saltmarsh."),
      ("What does Mira Quell do?", "Mira Quell works as a glassblower."),
      ("Where was Tobin Sarr born?", "Tobin Sarr was born in Ironvale."),
      ("What does Tobin Sarr do?", "Tobin Sarr works as a ferryman.")]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, object]:
    """A randomly initialised one-layer, 32-wide Llama saved like a target model (no training: fast)."""
    out = tmp_path_factory.mktemp("wagle") / "model"
    tokenizer = train_tokenizer([t for pair in QA for t in pair] + [format_prompt(q) for q, _ in QA], 300, out)
    build_model(tokenizer, TinyLlamaConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                seed=0).save_pretrained(out)
    return out, tokenizer


def real_scores(model_dir: Path, tokenizer) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    g_f = accumulate_gradients(model, pair_batches(tokenizer, QA[:2], 1))
    g_r = accumulate_gradients(model, pair_batches(tokenizer, QA[2:], 1))
    return attribution_scores(model, g_f, g_r)


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.b = torch.nn.Parameter(torch.tensor([[0.5, 1.0], [2.0, -1.0]]))


def test_score_is_minus_abs_theta_minus_gr_over_mu_times_gf_on_a_hand_computed_toy() -> None:
    g_r = {"a": torch.tensor([0.5, 1.0]), "b": torch.tensor([[0.0, 0.25], [1.0, -1.0]])}
    g_f = {"a": torch.tensor([2.0, -3.0]), "b": torch.tensor([[1.0, 4.0], [-0.5, 0.25]])}
    scores = attribution_scores(Toy(), g_f, g_r, mu=0.5)  # θ − g_r/0.5 = θ − 2·g_r
    # a: [1 − 1, −2 − 2] ⊙ [2, −3] = [0, 12]
    # b: [[.5, .5], [0, 1]] ⊙ [[1, 4], [−.5, .25]] = [[.5, 2], [0, .25]]
    assert torch.equal(scores["a"], torch.tensor([-0.0, -12.0]))
    assert torch.equal(scores["b"], torch.tensor([[-0.5, -2.0], [-0.0, -0.25]]))
    # the default μ = 1e-6 makes the retain gradient dominate: |(θ − 1e6·g_r) ⊙ g_f|
    default = attribution_scores(Toy(), g_f, g_r)
    assert default["a"][1].item() == pytest.approx(-abs((-2.0 - 1e6) * -3.0), rel=1e-6)
    # ratio 0.5 of 6 weights keeps the 3 largest |S|: 12, 2, 0.5
    mask = wagle_mask(scores, 0.5)
    assert torch.equal(mask["a"], torch.tensor([False, True]))
    assert torch.equal(mask["b"], torch.tensor([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="mu: must be > 0"):
        attribution_scores(Toy(), g_f, g_r, mu=0.0)


score_dicts = st.lists(
    st.tuples(st.lists(st.integers(1, 6), min_size=0, max_size=3),
              st.lists(st.integers(0, 4), min_size=216, max_size=216)),  # a few distinct values: many ties
    min_size=1, max_size=4,
).map(lambda tensors: {f"t{i}": (-1) ** i * torch.tensor(values[: math.prod(shape)], dtype=torch.float32).reshape(shape)
                       for i, (shape, values) in enumerate(tensors)})


@settings(max_examples=60, deadline=None)
@given(scores=score_dicts, ratio=st.floats(0.0, 1.0))
def test_global_mask_keeps_exactly_round_ratio_n_and_the_largest(scores: dict, ratio: float) -> None:
    with mock.patch.object(wagle, "CHUNK", 5):  # many chunks per tensor: the streaming path is what runs
        mask = wagle_mask(scores, ratio)
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in mask.values()) == kept_count(total, ratio) == round(ratio * total)
    kept = torch.cat([s.abs().reshape(-1)[m.reshape(-1)] for s, m in zip(scores.values(), mask.values())])
    dropped = torch.cat([s.abs().reshape(-1)[~m.reshape(-1)] for s, m in zip(scores.values(), mask.values())])
    if kept.numel() and dropped.numel():
        assert kept.min() >= dropped.max()  # ranked globally, not per tensor
    assert all(m.dtype == torch.bool and m.shape == s.shape for s, m in zip(scores.values(), mask.values()))


def test_ties_are_broken_by_sorted_name_then_flat_index_whatever_the_dict_order() -> None:
    scores = {"b": torch.zeros(4), "a": torch.zeros(3), "c": -torch.ones(2)}
    mask = wagle_mask(scores, 0.5)  # k = round(4.5) = 4: both of c, then the first two ties: a[0], a[1]
    assert torch.equal(mask["c"], torch.tensor([True, True]))
    assert torch.equal(mask["a"], torch.tensor([True, True, False]))
    assert not mask["b"].any()
    reordered = wagle_mask(dict(reversed(scores.items())), 0.5)
    assert all(torch.equal(mask[name], reordered[name]) for name in scores)
    with mock.patch.object(wagle, "CHUNK", 2):  # ties split across chunks: the same first ties
        assert all(torch.equal(mask[name], m) for name, m in wagle_mask(scores, 0.5).items())


@pytest.mark.parametrize("seed", range(5))
def test_streamed_threshold_equals_the_full_concatenation_threshold(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (64,), (3, 4, 6), (1,)]
    scores = {f"t{i}": torch.randn(shape, generator=generator) * 10.0 ** (i - 2) for i, shape in enumerate(shapes)}
    everything = torch.cat([s.abs().reshape(-1) for s in scores.values()])
    for k in (1, 2, 17, everything.numel() // 2, everything.numel() - 1, everything.numel()):
        with mock.patch.object(wagle, "CHUNK", 8):
            streamed = global_threshold(scores, k)
        assert streamed == everything.topk(k).values[-1].item()
    with pytest.raises(ValueError, match="NaN"):
        global_threshold({"x": torch.tensor([1.0, float("nan")])}, 1)


def test_attribution_is_bit_identical_across_runs_and_leaves_the_model_alone(tiny) -> None:
    model_dir, tokenizer = tiny
    first, second = real_scores(model_dir, tokenizer), real_scores(model_dir, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert list(first) == [name for name, _ in model.named_parameters()]
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert all((s <= 0).all() for s in first.values()) and any((s < 0).any() for s in first.values())
    # one pass, no optimiser: weights untouched, gradients handed back, not left on the model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = accumulate_gradients(model, pair_batches(tokenizer, QA, 2))
    assert all(torch.equal(p, before[name]) and p.grad is None for name, p in model.named_parameters())
    assert grads.keys() == before.keys() and grads["model.embed_tokens.weight"].abs().sum() > 0


def test_pack_unpack_and_file_round_trip_with_sha256(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    mask = {"w": torch.rand(3, 5, generator=generator) > 0.5, "b": torch.rand(11, generator=generator) > 0.5,
            "s": torch.tensor(True)}  # numels 15, 11 and 1: none a multiple of 8
    packed = pack_mask(mask)
    assert packed["w"][0] == (3, 5) and len(packed["w"][1]) == 2  # one bit a weight
    assert all(torch.equal(mask[n], m) for n, m in unpack_mask(packed).items())

    path = tmp_path / "wagle_mask.safetensors"
    manifest = save_mask(mask, path, metadata={"requested_ratio": 0.5})
    on_disk = json.loads(manifest_path(path).read_text())
    assert on_disk == manifest and on_disk["sha256"] == mask_fingerprint(mask)
    assert on_disk["kept"] == sum(int(m.sum()) for m in mask.values()) and on_disk["total"] == 27
    assert on_disk["tensors"]["w"] == {"shape": [3, 5], "kept": int(mask["w"].sum())}
    assert on_disk["ratio"] == pytest.approx(on_disk["kept"] / 27) and on_disk["metadata"] == {"requested_ratio": 0.5}
    loaded = load_mask(path)
    assert loaded.keys() == mask.keys() and all(torch.equal(mask[n], loaded[n]) for n in mask)
    first_bytes = path.read_bytes()
    save_mask(mask, path, metadata={"requested_ratio": 0.5})
    assert path.read_bytes() == first_bytes  # stable bytes: a stable DVC md5

    flipped = {**mask, "b": mask["b"].clone()}
    flipped["b"][0] = ~flipped["b"][0]
    assert mask_fingerprint(flipped) != mask_fingerprint(mask)
    save_mask(flipped, tmp_path / "other.safetensors")
    (tmp_path / "other.json").write_text(manifest_path(path).read_text())
    with pytest.raises(ValueError, match="sha256"):  # bits of one mask, manifest of another
        load_mask(tmp_path / "other.safetensors")


def test_random_mask_keeps_the_same_count_and_is_seeded(tiny) -> None:
    model_dir, tokenizer = tiny
    scores = real_scores(model_dir, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    attributed = wagle_mask(scores, 0.8)
    baseline = random_mask(model, 0.8, seed=3)
    count = sum(int(m.sum()) for m in attributed.values())
    assert count == sum(int(m.sum()) for m in baseline.values()) == round(0.8 * sum(s.numel() for s in scores.values()))
    assert mask_fingerprint(baseline) == mask_fingerprint(random_mask(model, 0.8, seed=3))
    assert mask_fingerprint(baseline) != mask_fingerprint(random_mask(model, 0.8, seed=4))
    shapes = {name: s.shape for name, s in scores.items()}
    assert mask_fingerprint(random_mask(shapes, 0.8, seed=3)) == mask_fingerprint(baseline)


def test_full_run_with_a_mask_keeps_every_masked_weight_bit_identical(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer = tiny
    mask = wagle_mask(real_scores(model_dir, tokenizer), 0.5)
    mask["model.norm.weight"] = torch.zeros_like(mask["model.norm.weight"])  # one tensor frozen entirely
    forget = [{"train_questions": [q], "answer": a} for q, a in QA[:2]]
    retain = [{"train_questions": [q], "answer": a} for q, a in QA[2:]]
    result = run_unlearning(model_dir, tokenizer, forget, retain, "graddiff", "full",
                            {"steps": 3, "lr": 3e-3, "batch_size": 2}, tmp_path, mask=mask)
    assert result["steps_done"] == 3 and result["trainable_parameters"] == sum(int(m.sum()) for m in mask.values())
    before = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(tmp_path).named_parameters())
    changed = kept = 0
    for name, keep in mask.items():
        assert torch.equal(after[name].detach()[~keep], before[name].detach()[~keep]), name
        changed += int((after[name].detach()[keep] != before[name].detach()[keep]).sum())
        kept += int(keep.sum())
    assert changed > 0.9 * kept  # the trainable half did train


def test_masks_are_refused_for_lora_and_checked_against_the_model(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer = tiny
    records = [{"train_questions": [q], "answer": a} for q, a in QA]
    mask = {"model.norm.weight": torch.ones(32, dtype=torch.bool)}
    with pytest.raises(ValueError, match="lora_targets_from_attribution"):
        run_unlearning(model_dir, tokenizer, records[:1], records[2:], "graddiff", "lora", {}, tmp_path / "l",
                       mask=mask)
    with pytest.raises(ValueError, match=r"mask\['model.norm.weight'\]: expected shape \(32,\), got \(3,\)"):
        run_unlearning(model_dir, tokenizer, records[:1], records[2:], "graddiff", "full", {"steps": 1},
                       tmp_path / "f", mask={"model.norm.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="names no trainable parameter"):
        run_unlearning(model_dir, tokenizer, records[:1], records[2:], "graddiff", "full", {"steps": 1},
                       tmp_path / "f", mask={"lm_head.weight": torch.ones(3, dtype=torch.bool)})  # tied: not its own
    assert not (tmp_path / "l").exists() and not (tmp_path / "f").exists()


def test_lora_targets_pick_the_module_with_the_planted_attribution(tiny) -> None:
    model_dir, _tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    scores = {name: -torch.rand(p.shape, generator=generator) for name, p in model.named_parameters()}
    scores["model.layers.0.mlp.up_proj.weight"] *= 100.0
    targets = lora_targets_from_attribution(scores, model, top_fraction=0.5)
    assert targets.target_modules == ["model.layers.0.mlp.up_proj"]
    assert targets.module_suffixes == ["up_proj"] and targets.layers == [0] and targets.mass_share > 0.5
    everything = lora_targets_from_attribution(scores, model, top_fraction=1.0)
    assert len(everything.target_modules) == 7 and everything.mass_share == pytest.approx(1.0)  # q k v o gate up down
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets.target_modules))
    adapted = {name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"base_model.model.model.layers.0.mlp.up_proj"}
    with pytest.raises(ValueError, match="top_fraction"):
        lora_targets_from_attribution(scores, model, top_fraction=0.0)


def test_random_lora_targets_draw_from_the_same_candidates(tiny) -> None:
    from dagster_project.core.attribution import random_lora_targets

    model_dir, _tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    scores = {name: -torch.ones(p.shape) for name, p in model.named_parameters()}
    candidates = set(lora_targets_from_attribution(scores, model, top_fraction=1.0).target_modules)
    drawn = random_lora_targets(scores, model, count=3, seed=0)
    assert len(drawn.target_modules) == 3 and set(drawn.target_modules) <= candidates  # never the output head
    assert drawn == random_lora_targets(scores, model, count=3, seed=0)
    assert 0.0 < drawn.mass_share < 1.0 and random_lora_targets(scores, model, count=99, seed=1).mass_share == 1.0


def test_attribute_composes_the_parts_with_a_rescaled_retain_sample(tiny) -> None:
    """`attribute` = gradients over the forget pairs and an equally large seeded retain sample scaled by
    |D_r| / sample, then scores, mask and LoRA targets; the random baseline swaps in seeded draws."""
    import random

    from dagster_project.core.attribution import attribute, lora_targets_from_attribution, random_mask

    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget, retain = QA[:1], QA[1:]  # 3 retain pairs, a sample of 1, so g_r is scaled by 3
    found = attribute(model, tokenizer, forget, retain, 0.5, batch_size=1)
    sample = random.Random(0).sample(retain, 1)
    g_f = accumulate_gradients(model, pair_batches(tokenizer, forget, 1))
    g_r = {n: g * 3.0 for n, g in accumulate_gradients(model, pair_batches(tokenizer, sample, 1)).items()}
    scores = attribution_scores(model, g_f, g_r)
    assert all(torch.equal(found.mask[n], m) for n, m in wagle_mask(scores, 0.5).items())
    assert found.lora_targets == lora_targets_from_attribution(scores, model, 0.5)
    baseline = attribute(model, tokenizer, forget, retain, 0.5, random_baseline=True, batch_size=1)
    assert all(torch.equal(baseline.mask[n], m) for n, m in random_mask(model, 0.5, seed=0).items())
    assert len(baseline.lora_targets.target_modules) == len(found.lora_targets.target_modules)
