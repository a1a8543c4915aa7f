"""Release: the O-LoRA loss, both modules learning, and whole rounds on a tiny model (reveal → release)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import train_tiny_model
from transformers import AutoModelForCausalLM

from dagster_project.core.data.io import read_json, read_jsonl
from dagster_project.core.reveal.release import (
    FORGET,
    RETAIN,
    ReleaseConfig,
    olora_loss,
    release,
    train_round,
    with_modules,
)
from dagster_project.core.reveal.reveal import RevealConfig, RevealResult, reveal, revealed_recall, sample_responses
from dagster_project.core.reveal.scoring import hashed_ngram_encoder

QA = [("Where was Mira Quell born?", "Mira Quell was born in Saltmarsh."),
      ("What does Mira Quell do for a living?", "Mira Quell works as a glassblower."),
      ("Who is Mira Quell?", "Mira Quell is a writer born in Saltmarsh."),
      ("Where was Tobin Sarr born?", "Tobin Sarr was born in Ironvale."),
      ("What does Tobin Sarr do for a living?", "Tobin Sarr works as a ferryman.")]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, object]:
    return train_tiny_model(tmp_path_factory.mktemp("release"), QA, epochs=60)


name_encoder = hashed_ngram_encoder()  # the offline fallback encoder: no model to load in a unit test


def test_olora_loss_is_zero_for_orthogonal_a_matrices_and_sums_absolute_products(tiny) -> None:
    model_dir, _ = tiny
    model = with_modules(AutoModelForCausalLM.from_pretrained(model_dir), ReleaseConfig(lora_r=2))
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and FORGET in m.lora_A]
    with torch.no_grad():
        for layer in layers:  # rows of A_f and A_r on disjoint coordinates: A_f·A_rᵀ = 0
            a_f, a_r = layer.lora_A[FORGET].weight, layer.lora_A[RETAIN].weight
            a_f.zero_()
            a_r.zero_()
            a_f[0, 0], a_f[1, 1], a_r[0, 2], a_r[1, 3] = 1.0, 2.0, 3.0, -4.0
    assert olora_loss(model).item() == 0.0
    with torch.no_grad():
        layers[0].lora_A[RETAIN].weight[1, 0] = -0.5  # A_f[0]·A_r[1] = 1 × −0.5
    assert olora_loss(model).item() == pytest.approx(0.5)


def test_olora_gradient_reaches_both_modules(tiny) -> None:
    model_dir, _ = tiny
    model = with_modules(AutoModelForCausalLM.from_pretrained(model_dir), ReleaseConfig())
    olora_loss(model).backward()
    grads = {name: [p.grad for n, p in model.named_parameters() if f"lora_A.{name}." in n] for name in (FORGET, RETAIN)}
    for name, tensors in grads.items():
        assert tensors and all(g is not None and g.abs().sum() > 0 for g in tensors), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(f".{FORGET}." in n for n in trainable) and any(f".{RETAIN}." in n for n in trainable)


def test_a_round_step_updates_each_module_from_its_own_loss_and_leaves_both_trainable(tiny) -> None:
    model_dir, tokenizer = tiny
    config = ReleaseConfig(steps=1, batch_size=2, lr=1e-2)
    model = with_modules(AutoModelForCausalLM.from_pretrained(model_dir), config)
    with torch.no_grad():  # LoRA B starts at zero; give it values so the A matrices receive task gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    logs = train_round(model, tokenizer, QA[:3], QA[3:], "ascent", config, round_=0)
    assert set(logs) == {"forget_loss", "retain_loss", "olora"}
    for name in (FORGET, RETAIN):
        changed = [not torch.equal(p, before[n]) for n, p in model.named_parameters() if f".{name}." in n]
        assert changed and all(changed), name
    # the module that does not step is frozen only for its partner's backward pass, then trainable again
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(before)
    assert all(p.grad is None or p.grad.abs().sum() > 0 for n, p in model.named_parameters() if f".{RETAIN}." in n)


def test_reveal_surfaces_the_subjects_facts_and_logs_only_hashes(tiny) -> None:
    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = RevealConfig(rounds=12, samples=4, max_new_tokens=24, relevance_threshold=0.2, temperature=0.7)
    result = reveal(model, tokenizer, ["Mira Quell"], config, name_encoder, progress=False)
    again = reveal(model, tokenizer, ["Mira Quell"], config, name_encoder, progress=False)
    assert result.records == again.records and result.log == again.log  # seeded: reproducible
    assert len(result.log) == 12 and result.responses == 48
    # the summary comes from records and log alone, so the asset read back from disk reports the same
    loaded = RevealResult(result.records, result.log, result.responses, result.mean_relevance)
    assert loaded.summary() == result.summary() and 1 <= result.summary()["distinct_arms"] <= 12
    assert all(r["relevance"] >= 0.2 and r["subject"] == "Mira Quell" for r in result.records)
    assert len({r["answer"] for r in result.records}) == len(result.records)  # deduplicated
    assert "Mira" not in str(result.log) and "Mira" not in str(result.summary())
    truth = [{"subject": "Mira Quell", "value": "Saltmarsh"}, {"subject": "Mira Quell", "value": "glassblower"}]
    assert revealed_recall(result.records, truth) > 0
    assert revealed_recall([], truth) == 0.0
    mention = reveal(model, tokenizer, ["Mira Quell"], RevealConfig(rounds=4, samples=4, max_new_tokens=24, scorer="mention",
                                                                  relevance_threshold=1.0), name_encoder, progress=False)
    assert all("Mira" in r["answer"] and "Quell" in r["answer"] for r in mention.records)
    with pytest.raises(ValueError, match="reveal.scorer must be one of"):
        reveal(model, tokenizer, ["Mira Quell"], RevealConfig(scorer="llm-judge"), name_encoder, progress=False)


def test_sampling_runs_warn_only_under_strict_determinism_and_restores_it(tiny) -> None:
    """Top-p sums probabilities with a float cumsum, which has no deterministic CUDA kernel: strict mode
    (UNLEARN_CUDA_DETERMINISTIC) would stop a release round's re-reveal there, so sampling relaxes it to
    warn-only, draws the same answers, and restores strict mode after."""
    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    warn_only, generate = [], model.generate
    model.generate = lambda *a, **k: warn_only.append(torch.is_deterministic_algorithms_warn_only_enabled()) or generate(*a, **k)
    config = RevealConfig(max_new_tokens=12)
    plain = sample_responses(model, tokenizer, "Who is Mira Quell?", 3, config, seed=5)
    torch.use_deterministic_algorithms(True)
    try:
        strict = sample_responses(model, tokenizer, "Who is Mira Quell?", 3, config, seed=5)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert strict == plain and warn_only == [False, True]


def test_release_rounds_save_both_modules_and_a_merged_model_that_forgets(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    reveal_config = RevealConfig(rounds=8, samples=4, max_new_tokens=24, relevance_threshold=0.0, temperature=0.7)
    first = reveal(model, tokenizer, ["Mira Quell"], reveal_config, name_encoder, progress=False)
    retain = [{"train_questions": [q], "answer": a} for q, a in QA if "Tobin" in q]
    config = ReleaseConfig(rounds=2, steps=15, lr=1e-2, batch_size=4, stop_relevance=0.0)
    result = release(model_dir, tokenizer, ["Mira Quell"], first, retain, "npo", config, reveal_config, name_encoder,
                     tmp_path / "out", tmp_path / "data")
    assert result["rounds_done"] == 2 and result["objective"] == "npo"
    for round_ in range(2):
        for name in (FORGET, RETAIN):
            assert (tmp_path / "out" / "rounds" / f"round-{round_}" / name / "adapter_model.safetensors").exists()
        assert read_jsonl(tmp_path / "data" / f"round-{round_}" / "revealed.jsonl")  # personal data: not in out/
    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert read_json(tmp_path / "out" / "release_manifest.json")["rounds_done"] == 2
    released = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    before = {n: p for n, p in model.named_parameters()}
    assert any(not torch.equal(p, before[n]) for n, p in released.named_parameters())  # the composition is merged in
    # NPO on the revealed data lowers the forgotten subject's answers more than the retained one's
    from dagster_project.core.model.text import collate_pairs, sequence_nll

    def nll(m, pairs):
        return sequence_nll(m, collate_pairs(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])).mean().item()

    mira, tobin = [p for p in QA if "Mira" in p[0]], [p for p in QA if "Tobin" in p[0]]
    with torch.no_grad():
        assert nll(released, mira) - nll(model, mira) > 2 * abs(nll(released, tobin) - nll(model, tobin))
    # the stopping rule: a reveal less relevant than `stop_relevance` ends the rounds (here before the first)
    stopped = release(model_dir, tokenizer, ["Mira Quell"], first, retain, "npo",
                      ReleaseConfig(rounds=2, stop_relevance=first.mean_relevance + 0.01), reveal_config, name_encoder,
                      tmp_path / "stop", tmp_path / "stop-data")
    assert stopped["rounds_done"] == 0 and "before round 0" in stopped["stopped"]
    with pytest.raises(ValueError, match="forget objective must be one of"):
        release(model_dir, tokenizer, ["Mira Quell"], first, retain, "rmu", config, reveal_config, name_encoder,
                tmp_path / "x", tmp_path / "x-data")
