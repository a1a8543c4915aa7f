"""Answer-only masking, the GradDiff loss sign, the method registry and one real unlearning run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dagster_project.core.data.io import md5_file
from dagster_project.core.methods.base import MethodConfig, UnlearningMethod
from dagster_project.core.methods.graddiff import GradDiff, GradDiffConfig
from dagster_project.core.methods.registry import available_methods, get_method, register_method
from dagster_project.core.eval.standalone import load_for_eval
from dagster_project.core.methods.runner import run_unlearning
from dagster_project.core.model.text import IGNORE_INDEX, batch_nll, collate_pairs, encode_pair, format_prompt
from dagster_project.core.model.tiny_llama import TinyLlamaConfig, TrainConfig, train_model, train_tokenizer

QA = [("Where was Ada Brynn born?", "Ada Brynn was born in Frosthaven."),
      ("What does Ada Brynn do?", "Ada Brynn works as a potter."),
      ("Where was Olo Vant born?", "Olo Vant was born in Cindermere."),
      ("What does Olo Vant do?", "Olo Vant works as a baker.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("tiny")
    tokenizer = train_tokenizer([t for pair in QA for t in pair] + [format_prompt(q) for q, _ in QA], 300, out / "tok")
    train_model(tokenizer, QA * 8, TinyLlamaConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                TrainConfig(epochs=25, schedule_epochs=25, lr=1e-2, batch_size=8), out / "model")
    return out / "model", tokenizer


def test_answer_only_labels(tiny) -> None:
    _model_dir, tokenizer = tiny
    ids, labels = encode_pair(tokenizer, QA[0][0], QA[0][1])
    prompt_len = len(tokenizer(format_prompt(QA[0][0]), add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_len:], skip_special_tokens=True).strip() == QA[0][1]
    batch = collate_pairs(tokenizer, [QA[0][0], QA[1][0]], ["short.", QA[1][1]])
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["labels"][padded] == IGNORE_INDEX).all()


def test_graddiff_loss_sign_ascends_forget_and_descends_retain(tiny) -> None:
    from transformers import AutoModelForCausalLM

    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget, retain = collate_pairs(tokenizer, *zip(*QA[:2])), collate_pairs(tokenizer, *zip(*QA[2:]))
    method = GradDiff(GradDiffConfig(gamma=1.0, alpha=1.0))
    loss, logs = method.loss(model, forget, retain)
    assert loss.item() == pytest.approx(-logs["forget_nll"] + logs["retain_loss"], rel=1e-5)
    before_f, before_r = batch_nll(model, forget).item(), batch_nll(model, retain).item()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    loss.backward()
    optimiser.step()
    assert batch_nll(model, forget).item() > before_f  # ascent on forget
    assert batch_nll(model, retain).item() < before_r + 0.5 * (batch_nll(model, forget).item() - before_f)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_unlearning_raises_forget_loss_and_saves(tiny, tmp_path: Path, mode: str) -> None:
    model_dir, tokenizer = tiny
    forget = [{"train_questions": [QA[0][0]], "answer": QA[0][1]}]
    retain = [{"train_questions": [q], "answer": a} for q, a in QA[2:]]
    result = run_unlearning(model_dir, tokenizer, forget, retain, "graddiff", mode,
                            {"steps": 15, "lr": 5e-3 if mode == "lora" else 1e-3, "batch_size": 2}, tmp_path / mode)
    assert result["steps_done"] == 15 and not result["stopped_early"]
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    unlearned, _tokenizer = load_for_eval(tmp_path / mode)
    batch = collate_pairs(tokenizer, [QA[0][0]], [QA[0][1]])
    assert batch_nll(unlearned, batch).item() > batch_nll(base, batch).item() + 0.5
    saved = {p.name for p in (tmp_path / mode).iterdir()}
    assert ("adapter_model.safetensors" in saved) if mode == "lora" else ("model.safetensors" in saved)
    # same seed, same bytes: the artifact's DVC md5 must not change on a re-run
    run_unlearning(model_dir, tokenizer, forget, retain, "graddiff", mode,
                   {"steps": 15, "lr": 5e-3 if mode == "lora" else 1e-3, "batch_size": 2}, tmp_path / f"{mode}-again")
    for name in saved:
        assert md5_file(tmp_path / mode / name) == md5_file(tmp_path / f"{mode}-again" / name), name


def test_registry_refuses_duplicates_and_bad_names() -> None:
    assert "graddiff" in available_methods()
    with pytest.raises(ValueError, match="already registered"):
        register_method(name="graddiff", config_cls=GradDiffConfig, method_cls=GradDiff)
    with pytest.raises(ValueError, match="must match"):
        register_method(name="Grad-Diff", config_cls=GradDiffConfig, method_cls=GradDiff)
    with pytest.raises(TypeError):
        register_method(name="not_a_method", config_cls=dict, method_cls=UnlearningMethod)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="available: .*graddiff"):
        get_method("gradient_magic")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"hyperparameters: key #1 is not a setting of GradDiffConfig \(did you mean 'lr'\?\)"):
        GradDiffConfig.from_hyperparameters({"lrr": 0.1})
    with pytest.raises(ValueError, match=r"hyperparameters\.steps: expected int"):
        GradDiffConfig.from_hyperparameters({"steps": "ten"})
    with pytest.raises(ValueError, match=r"hyperparameters\.lr: must be > 0"):
        GradDiffConfig.from_hyperparameters({"lr": -1.0})
    from dagster_project.core.methods.npo import NPOConfig
    from dagster_project.core.methods.simnpo import SimNPOConfig

    for config_cls in (NPOConfig, SimNPOConfig):  # a method's own positive field is checked like the shared ones
        with pytest.raises(ValueError, match=r"hyperparameters\.beta: must be > 0"):
            config_cls.from_hyperparameters({"beta": 0.0})
    with pytest.raises(ValueError, match="retain_loss"):
        GradDiffConfig.from_hyperparameters({"retain_loss": "mse"})
    config = GradDiffConfig.from_hyperparameters({"lr": 1, "gamma": 2.0})
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.gamma == 2.0
    assert all(f.metadata.get("help") for f in dataclasses.fields(GradDiffConfig))
    assert issubclass(GradDiffConfig, MethodConfig)


def test_training_is_bit_reproducible(tiny, tmp_path: Path) -> None:
    _model_dir, tokenizer = tiny
    digests = []
    for run in range(2):
        train_model(tokenizer, QA * 4, TinyLlamaConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                    TrainConfig(epochs=2, schedule_epochs=2, lr=1e-2, batch_size=8, seed=3), tmp_path / str(run))
        digests.append(md5_file(tmp_path / str(run) / "model.safetensors"))
    assert digests[0] == digests[1]


def test_token_stats_agree_with_answer_losses_and_relearning_recovers(tiny) -> None:
    from dagster_project.core.eval.robustness import relearn_attack, split_halves
    from dagster_project.core.eval.scoring import answer_losses, token_stats

    model_dir, tokenizer = tiny
    model, _ = load_for_eval(model_dir)
    questions, answers = [q for q, _ in QA], [a for _, a in QA]
    stats = token_stats(model, tokenizer, questions, answers)
    losses = answer_losses(model, tokenizer, questions, answers)
    for item, loss in zip(stats, losses):
        assert -np.mean(item["logprob"]) == pytest.approx(loss, rel=1e-5)
        assert all(s >= 0 for s in item["sigma"]) and len(item["mu"]) == len(item["argmax_match"])
    records = [{"id": str(i), "question": q, "train_questions": [q], "answer": a} for i, (q, a) in enumerate(QA)]
    attacked, measured = split_halves(records, seed=0)
    assert len(attacked) == len(measured) == 2 and not {r["id"] for r in attacked} & {r["id"] for r in measured}
    result = relearn_attack(model, tokenizer, records, steps=3, lr=1e-3, batch_size=2)
    assert result["relearn_rouge_recovered"] == pytest.approx(result["relearn_rouge_after"] - result["relearn_rouge_before"])
    assert result["relearn_measured_items"] == 2


def test_npo_loss_at_theta0_is_two_over_beta_log_two(tiny) -> None:
    # at θ = θ₀ the log-ratio is 0, σ(0) = 1/2, so the forget term is −(2/β)·log(1/2) = (2/β)·log 2
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dagster_project.core.methods.npo import NPO, NPOConfig

    model_dir, tokenizer = tiny
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])  # B = 0 at init: adapter is a no-op
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora)
    forget, retain = collate_pairs(tokenizer, *zip(*QA[:2])), collate_pairs(tokenizer, *zip(*QA[2:]))
    _loss, logs = NPO(NPOConfig(beta=0.5)).loss(model, forget, retain)
    assert logs["npo_loss"] == pytest.approx(2 / 0.5 * np.log(2), rel=1e-5)


def test_npo_reference_logprobs_are_computed_once_per_sequence(tiny) -> None:
    # θ₀ is frozen: the cache must give exactly θ₀'s log-probs, whatever the batch padding, and run θ₀ once per sequence
    from transformers import AutoModelForCausalLM

    from dagster_project.core.methods.npo import NPO, NPOConfig
    from dagster_project.core.model.text import sequence_logprob

    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model._unlearn_reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    calls = []
    model._unlearn_reference.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    method = NPO(NPOConfig())
    first = collate_pairs(tokenizer, [QA[0][0], QA[1][0]], [QA[0][1], QA[1][1]])
    mixed = collate_pairs(tokenizer, [QA[1][0], QA[2][0], QA[3][0]], [QA[1][1], QA[2][1], QA[3][1]])
    cached = method.reference_logprob(model, first)
    assert len(calls) == 1 and len(method.reference_cache) == 2
    again = method.reference_logprob(model, mixed)  # QA[1] cached; only the two new rows go through θ₀
    assert calls == [2, 2] and len(method.reference_cache) == 4
    method.reference_logprob(model, mixed)
    assert len(calls) == 2  # nothing new: θ₀ not run again
    with torch.no_grad():
        exact_first, _ = sequence_logprob(model._unlearn_reference, first)
        exact_mixed, _ = sequence_logprob(model._unlearn_reference, mixed)
    assert torch.allclose(cached, exact_first, atol=1e-4) and torch.allclose(again, exact_mixed, atol=1e-4)


def test_simnpo_loss_matches_its_formula(tiny) -> None:
    from transformers import AutoModelForCausalLM

    from dagster_project.core.methods.simnpo import SimNPO, SimNPOConfig
    from dagster_project.core.model.text import sequence_logprob

    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget, retain = collate_pairs(tokenizer, *zip(*QA[:2])), collate_pairs(tokenizer, *zip(*QA[2:]))
    _loss, logs = SimNPO(SimNPOConfig(beta=2.0, delta=0.5)).loss(model, forget, retain)
    logp, n = sequence_logprob(model, forget)
    avg = (logp / n).detach().numpy()
    expected = -(2 / 2.0) * np.mean(np.log(1 / (1 + np.exp(2.0 * avg + 0.5))))  # log σ(x) = −log(1 + e^(−x))
    assert logs["simnpo_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["npo", "simnpo"])
def test_preference_methods_unlearn(tiny, tmp_path: Path, method: str) -> None:
    model_dir, tokenizer = tiny
    forget = [{"train_questions": [QA[0][0]], "answer": QA[0][1]}]
    retain = [{"train_questions": [q], "answer": a} for q, a in QA[2:]]
    result = run_unlearning(model_dir, tokenizer, forget, retain, method, "lora",
                            {"steps": 20, "lr": 1e-2, "batch_size": 2}, tmp_path / method)
    assert result["steps_done"] == 20
    unlearned, _tokenizer = load_for_eval(tmp_path / method)
    from transformers import AutoModelForCausalLM

    batch = collate_pairs(tokenizer, [QA[0][0]], [QA[0][1]])
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert batch_nll(unlearned, batch).item() > batch_nll(base, batch).item() + 0.5
