"""GradAscent, IdkSFT, IdkDPO and RMU: losses checked by hand, one real run each (lora and full), config errors.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_baseline_methods.py
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from conftest import train_tiny_model
from transformers import AutoModelForCausalLM

from dagster_project.core.methods.gradascent import GradAscent, GradAscentConfig
from dagster_project.core.methods.idkdpo import IdkDPO, IdkDPOConfig
from dagster_project.core.methods.idksft import IdkSFT, IdkSFTConfig, idk_answers, pick_idk
from dagster_project.core.methods.registry import available_methods, get_method
from dagster_project.core.methods.rmu import RMU, RMUConfig, control_vector, layer_forward, masked_mse
from dagster_project.core.methods.runner import run_unlearning
from dagster_project.core.model.text import batch_nll, collate_pairs, sequence_logprob

QA = [("Where was Mira Quell born?", "Mira Quell was born in Saltmarsh."),
      ("What does Mira Quell do?", "Mira Quell works as a glassblower."),
      ("Where was Tobin Sarr born?", "Tobin Sarr was born in Ironvale."),
      ("What does Tobin Sarr do?", "Tobin Sarr works as a ferryman.")]
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple[Path, object]:
    """Two decoder layers (so RMU's middle layer is not the last) that have memorised QA."""
    return train_tiny_model(tmp_path_factory.mktemp("tiny2"), QA, num_layers=2)


@pytest.fixture
def batches(tiny) -> tuple[dict, dict]:
    _model_dir, tokenizer = tiny
    return collate_pairs(tokenizer, *zip(*QA[:2])), collate_pairs(tokenizer, *zip(*QA[2:]))


def at_theta0(model_dir: Path, mode: str) -> torch.nn.Module:
    """The model as the runner hands it to a method, before any step: θ = θ₀ in both modes."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if mode == "lora":  # B = 0 at init: the adapter is a no-op
        return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model._unlearn_reference = copy.deepcopy(model).eval().requires_grad_(False)
    return model


def perturbed(model_dir: Path) -> torch.nn.Module:
    """A full-mode model one seeded noise step away from its frozen θ₀."""
    model = at_theta0(model_dir, "full")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def test_every_method_is_registered() -> None:
    assert {"gradascent", "idksft", "idkdpo", "rmu", "graddiff", "npo", "simnpo"} <= set(available_methods())
    assert get_method("rmu").config_cls is RMUConfig and get_method("idkdpo").method_cls is IdkDPO


def test_idk_pool_ships_with_the_package_and_the_draw_is_seeded() -> None:
    answers = idk_answers()
    assert len(answers) == len(set(answers)) == 100 and answers[0] == "I'm not certain about that."
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in ("resources/idontknow.jsonl", "resources/LICENSE-TOFU"):
        assert name in package_data["dagster_project.core.methods"]
        assert (REPO / "dagster_project/core/methods" / name).is_file()
    # a SHA-512-seeded draw: this exact value in every process, whatever PYTHONHASHSEED is
    assert pick_idk("q", "a", seed=0) == "I'm unaware of that detail."
    questions = [(f"Where was person {i} born?", f"In town {i}.") for i in range(30)]
    pairs = IdkSFT(IdkSFTConfig(seed=0)).alternative_pairs(questions)
    assert pairs == IdkSFT(IdkSFTConfig(seed=0)).alternative_pairs(questions)  # same every step and run
    assert [q for q, _ in pairs] == [q for q, _ in questions] and all(a in answers for _, a in pairs)
    assert len({a for _, a in pairs}) >= 20  # varied, not one refusal for all
    assert pairs != IdkSFT(IdkSFTConfig(seed=1)).alternative_pairs(questions)


def test_gradascent_loss_is_minus_forget_nll_and_ignores_retain(tiny, batches) -> None:
    model_dir, _tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget, retain = batches
    loss, logs = GradAscent(GradAscentConfig()).loss(model, forget, retain)
    assert loss.item() == pytest.approx(-batch_nll(model, forget).item(), rel=1e-6)
    assert logs == {"forget_nll": pytest.approx(-loss.item(), rel=1e-6)}
    loss_other_retain, _ = GradAscent(GradAscentConfig()).loss(model, forget, forget)
    assert loss_other_retain.item() == pytest.approx(loss.item(), rel=1e-6)


def test_gradascent_is_stopped_by_the_runners_divergence_check(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer = tiny
    records = [{"train_questions": [q], "answer": a} for q, a in QA]
    result = run_unlearning(model_dir, tokenizer, records[:1], records[2:], "gradascent", "lora",
                            {"steps": 100, "lr": 1e-2, "batch_size": 2, "diverge_nll": 5.0}, tmp_path)
    assert result["stopped_early"] and 1 < result["steps_done"] < 100
    assert result["final_logs"]["forget_nll"] > 5.0 and (tmp_path / "adapter_model.safetensors").is_file()


def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tiny, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights blown up by a too-high learning rate: the run fails naming the likely cause, and saves no adapter."""
    from dagster_project.core.methods.runner import NonFiniteLoss

    model_dir, tokenizer = tiny
    records = [{"train_questions": [q], "answer": a} for q, a in QA]
    honest_loss = GradAscent.loss
    calls = []

    def blows_up_at_step_3(self, model, forget, retain, **extra):  # noqa: ANN001, ANN202 - the method's signature
        loss, logs = honest_loss(self, model, forget, retain, **extra)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), logs

    monkeypatch.setattr(GradAscent, "loss", blows_up_at_step_3)
    with pytest.raises(NonFiniteLoss, match=r"gradascent: the training loss is not finite at step 3 of 10 \(lr 0\.01\)"
                                             r".*lower the request's hyperparameters\.lr.*Nothing was saved"):
        run_unlearning(model_dir, tokenizer, records[:1], records[2:], "gradascent", "lora",
                       {"steps": 10, "lr": 1e-2, "batch_size": 2}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_idksft_loss_is_idk_nll_plus_alpha_retain_nll(tiny, batches) -> None:
    model_dir, tokenizer = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget, retain = batches
    method = IdkSFT(IdkSFTConfig(gamma=1.5, alpha=0.5))
    idk = collate_pairs(tokenizer, *zip(*method.alternative_pairs(QA[:2])))
    loss, logs = method.loss(model, forget, retain, alternative=idk)
    idk_nll, retain_nll = batch_nll(model, idk).item(), batch_nll(model, retain).item()
    assert idk_nll > 3  # the memorised model has never seen a refusal: a real target, not a no-op
    assert loss.item() == pytest.approx(1.5 * idk_nll + 0.5 * retain_nll, rel=1e-5)
    assert logs["forget_nll"] == pytest.approx(batch_nll(model, forget).item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_idkdpo_loss_at_theta0_is_two_over_beta_log_two(tiny, batches, mode: str) -> None:
    # at θ = θ₀ both log-ratios are 0, so the margin is 0 and −(2/β)·log σ(0) = (2/β)·log 2
    model_dir, tokenizer = tiny
    model = at_theta0(model_dir, mode)
    forget, retain = batches
    method = IdkDPO(IdkDPOConfig(beta=0.2, alpha=0.5))
    idk = collate_pairs(tokenizer, *zip(*method.alternative_pairs(QA[:2])))
    loss, logs = method.loss(model, forget, retain, alternative=idk)
    assert logs["dpo_loss"] == pytest.approx(2 / 0.2 * np.log(2), rel=1e-5)
    assert loss.item() == pytest.approx(2 / 0.2 * np.log(2) + 0.5 * batch_nll(model, retain).item(), rel=1e-5)


def test_idkdpo_loss_away_from_theta0_matches_its_formula(tiny, batches) -> None:
    model_dir, tokenizer = tiny
    model = perturbed(model_dir)
    forget, retain = batches
    method = IdkDPO(IdkDPOConfig(beta=0.5))
    idk = collate_pairs(tokenizer, *zip(*method.alternative_pairs(QA[:2])))
    _loss, logs = method.loss(model, forget, retain, alternative=idk)
    with torch.no_grad():
        win = (sequence_logprob(model, idk)[0] - sequence_logprob(model._unlearn_reference, idk)[0]).numpy()
        lose = (sequence_logprob(model, forget)[0] - sequence_logprob(model._unlearn_reference, forget)[0]).numpy()
    assert np.abs(win - lose).max() > 0.1  # the perturbation really moved the margin off 0
    expected = -(2 / 0.5) * np.mean(-np.log1p(np.exp(-0.5 * (win - lose))))  # log σ(x) = −log(1 + e^(−x))
    assert logs["dpo_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_rmu_terms_at_theta0_match_a_hand_computation(tiny, batches, mode: str) -> None:
    model_dir, _tokenizer = tiny
    model = at_theta0(model_dir, mode)
    forget, retain = batches
    # layer 0: transformers' hidden_states[l + 1] is layer l's output except for the last layer (post-norm)
    loss, logs = RMU(RMUConfig(layer=0, steering_coeff=3.0, alpha=2.0, seed=5)).loss(model, forget, retain)
    with torch.no_grad():
        hidden = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"],
                       output_hidden_states=True).hidden_states[1]  # (batch, seq, 32)
    u = torch.rand(32, generator=torch.Generator().manual_seed(5))
    target = 3.0 * u / u.norm()
    tokens = forget["attention_mask"].bool()
    assert (~tokens).any()  # the batch is padded, so the mask is exercised
    expected = ((hidden[tokens] - target) ** 2).mean().item()
    assert logs["rmu_forget"] == pytest.approx(expected, rel=1e-5)
    assert logs["rmu_retain"] == pytest.approx(0.0, abs=1e-10)  # θ = θ₀ on the retain set
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["forget_nll"] == pytest.approx(batch_nll(model, forget).item(), rel=1e-5)


def test_rmu_retain_term_away_from_theta0_and_default_layer(tiny, batches) -> None:
    model_dir, _tokenizer = tiny
    model = perturbed(model_dir)
    forget, retain = batches
    _loss, logs = RMU(RMUConfig(layer=0, alpha=3.0)).loss(model, forget, retain)
    with torch.no_grad():
        inputs = {"input_ids": retain["input_ids"], "attention_mask": retain["attention_mask"]}
        now = model(**inputs, output_hidden_states=True).hidden_states[1]
        then = model._unlearn_reference(**inputs, output_hidden_states=True).hidden_states[1]
    tokens = retain["attention_mask"].bool()
    assert logs["rmu_retain"] == pytest.approx(((now[tokens] - then[tokens]) ** 2).mean().item(), rel=1e-5)
    assert logs["rmu_retain"] > 1e-4
    assert RMU(RMUConfig()).layer_index(model) == 1  # -1 means num_layers // 2 = 2 // 2
    c_u = control_vector(32, 6.0, seed=0)
    assert c_u.norm().item() == pytest.approx(6.0) and (c_u >= 0).all()


def test_rmu_layer_out_of_range_fails_before_any_step(tiny, tmp_path: Path) -> None:
    model_dir, tokenizer = tiny
    records = [{"train_questions": [q], "answer": a} for q, a in QA]
    with pytest.raises(ValueError, match=r"hyperparameters\.layer: the model has 2 decoder layers, so expected 0\.\.1"):
        run_unlearning(model_dir, tokenizer, records[:1], records[2:], "rmu", "lora", {"layer": 2}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_configs_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=r"hyperparameters\.beta: must be > 0"):
        IdkDPOConfig.from_hyperparameters({"beta": -0.1})
    with pytest.raises(ValueError, match=r"hyperparameters\.steering_coeff: must be > 0"):
        RMUConfig.from_hyperparameters({"steering_coeff": -6.5})
    with pytest.raises(ValueError, match=r"hyperparameters\.layer: expected a layer index >= 0 or -1"):
        RMUConfig.from_hyperparameters({"layer": -2})
    with pytest.raises(ValueError, match=r"hyperparameters\.layer: expected int"):
        RMUConfig.from_hyperparameters({"layer": 1.5})
    with pytest.raises(ValueError, match=r"hyperparameters\.alpha: must be >= 0"):
        RMUConfig.from_hyperparameters({"alpha": -1.0})
    with pytest.raises(ValueError, match=r"hyperparameters: key #1 is not a setting of GradAscentConfig"):
        GradAscentConfig.from_hyperparameters({"gamma": 1.0})  # no retain or weighting knobs by definition
    with pytest.raises(ValueError, match="retain_loss"):
        IdkSFTConfig.from_hyperparameters({"retain_loss": "mse"})
    assert IdkDPOConfig().beta == 0.1 and RMUConfig().steering_coeff == 20.0
    for config_cls in (GradAscentConfig, IdkSFTConfig, IdkDPOConfig, RMUConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(config_cls)), config_cls.__name__


def load_unlearned(model_dir: Path, out: Path, mode: str) -> torch.nn.Module:
    if mode == "lora":
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).eval()
    return AutoModelForCausalLM.from_pretrained(out).eval()


RUNS = {  # method: its own hyperparameters (steps sized so each effect is several times its threshold)
    "gradascent": {"steps": 5},
    "idksft": {"steps": 30},
    "idkdpo": {"steps": 30},
    "rmu": {"steps": 30, "steering_coeff": 8.0},  # c·u well above this 32-wide layer's natural norm
}


@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("method", sorted(RUNS))
def test_real_run_unlearns_and_saves(tiny, tmp_path: Path, method: str, mode: str) -> None:
    model_dir, tokenizer = tiny
    forget = [{"train_questions": [QA[0][0]], "answer": QA[0][1]}]
    retain = [{"train_questions": [q], "answer": a} for q, a in QA[2:]]
    hyperparameters = {"lr": 1e-2 if mode == "lora" else 3e-3, "batch_size": 2, **RUNS[method]}
    result = run_unlearning(model_dir, tokenizer, forget, retain, method, mode, hyperparameters, tmp_path)
    assert result["steps_done"] == RUNS[method]["steps"] and not result["stopped_early"]
    saved = {p.name for p in tmp_path.iterdir()}
    expected = {"adapter_model.safetensors"} if mode == "lora" else {"model.safetensors", "tokenizer.json"}
    assert expected <= saved

    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    unlearned = load_unlearned(model_dir, tmp_path, mode)
    fact = collate_pairs(tokenizer, [QA[0][0]], [QA[0][1]])
    idk = collate_pairs(tokenizer, [QA[0][0]], [pick_idk(QA[0][0], QA[0][1], seed=0)])
    kept = collate_pairs(tokenizer, *zip(*QA[2:]))
    with torch.no_grad():
        before, after = batch_nll(base, fact).item(), batch_nll(unlearned, fact).item()
        if method == "rmu":  # RMU's own objective: the layer's activations move toward c·u, retain ones stay
            control = control_vector(32, 8.0, seed=0)
            distance = [masked_mse(layer_forward(m, fact, 1)[0], control, fact["attention_mask"]).item()
                        for m in (base, unlearned)]
            assert distance[1] < 0.9 * distance[0]
            assert batch_nll(unlearned, kept).item() < batch_nll(base, kept).item() + 0.1
        if method.startswith("idk"):  # trained toward the idk answer the runner paired with the question
            assert batch_nll(unlearned, idk).item() < batch_nll(base, idk).item() - 1.0
    assert after > before + {"gradascent": 1.0, "idksft": 0.3, "idkdpo": 0.2, "rmu": 0.3}[method]
