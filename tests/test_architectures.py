"""`model: {base: <folder>}` takes any local transformers causal LM: LoRA adapts every linear map whatever the
architecture calls it, RMU finds the decoder blocks, WAGLE picks among the same modules, and padding-free
batches are refused where an architecture would mix the packed sequences.

    .venv/bin/python -m pytest -q tests/test_architectures.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from peft import PeftModel

from dagster_project.core.attribution import lora_targets_from_attribution
from dagster_project.core.methods.runner import RunnerOptions, UnlearningLoop
from dagster_project.core.model.anatomy import adaptable_modules, decoder_layers, default_lora_targets
from dagster_project.core.model.tiny_llama import train_tokenizer

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
# architecture -> (config class, its shape, the LoRA targets it must get)
ARCHITECTURES = {
    "llama": (transformers.LlamaConfig, {**SMALL, "intermediate_size": 64},
              ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
    "phi3": (transformers.Phi3Config, {**SMALL, "intermediate_size": 64, "pad_token_id": 0},
             ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]),  # fused projections
    "opt": (transformers.OPTConfig, {**SMALL, "ffn_dim": 64, "word_embed_proj_dim": 32},
            ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"]),
    "gpt_neox": (transformers.GPTNeoXConfig, {**SMALL, "intermediate_size": 64},
                 ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"]),
    "gpt2": (transformers.GPT2Config, {"n_embd": 32, "n_layer": 2, "n_head": 2, "resid_pdrop": 0.0,
                                       "embd_pdrop": 0.0, "attn_pdrop": 0.0},
             ["c_attn", "c_fc", "c_proj"]),  # transformers' Conv1D, blocks under transformer.h
}
RECORDS = [{"train_questions": [f"What does person {i} do for a living?"], "answer": f"Person {i} works as a "
            f"{['baker', 'pilot', 'judge', 'tailor'][i % 4]} in town {i}."} for i in range(12)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    texts = [t for r in RECORDS for t in (r["answer"], *r["train_questions"])]
    return train_tokenizer(texts, 300, tmp_path_factory.mktemp("tokenizer"))


def random_model(architecture: str, tokenizer, out: Path) -> Path:
    config_cls, shape, _targets = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), **shape)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_lora_adapts_every_linear_map_of_any_architecture(architecture: str, tokenizer, tmp_path: Path) -> None:
    model_dir = random_model(architecture, tokenizer, tmp_path / "model")
    plain = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert default_lora_targets(plain) == ARCHITECTURES[architecture][2]
    assert len(decoder_layers(plain)) == 2

    forget, retain = RECORDS[:4], RECORDS[4:]
    for method in ("npo", "rmu"):  # NPO: θ₀ through the disabled adapter; RMU: a hook on a decoder block
        loop = UnlearningLoop(model_dir, tokenizer, forget, retain, method, "lora",
                              {"steps": 2, "batch_size": 4, "lr": 1e-3})
        logs = [loop.step() for _ in range(2)]
        assert all(math.isfinite(v) for step in logs for v in step.values())
        adapted = {name.rsplit(".", 1)[-1] for name, m in loop.model.named_modules() if hasattr(m, "lora_A")}
        assert adapted == set(ARCHITECTURES[architecture][2])  # every kind of linear map, none left out
        trained = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
        loop.save(tmp_path / method)
    reloaded = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "rmu")
    saved = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    assert saved.keys() == trained.keys()
    assert all(torch.equal(saved[n], trained[n].float()) for n in trained)
    assert any(bool(t.abs().sum()) for n, t in trained.items() if "lora_B" in n)  # the adapters did move


def test_wagle_picks_lora_targets_among_gpt2_conv1d_modules(tokenizer, tmp_path: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(random_model("gpt2", tokenizer, tmp_path / "gpt2"))
    candidates = adaptable_modules(model)
    assert sorted(candidates)[:2] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    assert "lm_head" not in candidates and len(candidates) == 8  # 4 per block: c_attn, attn c_proj, c_fc, mlp c_proj
    scores = {f"{name}.weight": torch.ones_like(m.weight) for name, m in candidates.items()}
    scores["transformer.h.1.mlp.c_fc.weight"] *= 1000.0
    picked = lora_targets_from_attribution(scores, model, top_fraction=0.5)
    assert picked.target_modules == ["transformer.h.1.mlp.c_fc"] and picked.layers == [1]


def test_snap_regularises_gpt2_conv1d_adapters_through_their_merged_weights(tokenizer, tmp_path: Path) -> None:
    """SNAP's sliced-Wasserstein term reads each adapted layer's effective weight W₀ + ΔW. GPT-2's Conv1D
    stores W as (in, out), so ΔW = B @ A must be transposed to line up with W₀: the effective weights the
    term sees must be the weights that merging the trained adapter gives."""
    from test_snap import FORGET, RETAIN  # people with attributes: SNAP's hard positives need them

    from dagster_project.core.methods.swd import changed_weights

    model_dir = random_model("gpt2", tokenizer, tmp_path / "gpt2")
    loop = UnlearningLoop(model_dir, tokenizer, FORGET, RETAIN, "snap", "lora",
                          {"steps": 3, "batch_size": 8, "lr": 1e-2, "neighbours": 1, "swd_directions": 8})
    logs = [loop.step() for _ in range(3)]
    assert all(math.isfinite(v) for step in logs for v in step.values()) and logs[-1]["swd"] > 0
    effective = [w.detach().clone() for w, _w0 in changed_weights(loop.model, None)]
    merged = adaptable_modules(loop.model.merge_and_unload())
    assert len(effective) == len(merged) == 8
    assert all(torch.allclose(w, m.weight.float(), atol=1e-6) for w, m in zip(effective, merged.values()))


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "opt"])
def test_padding_free_is_refused_where_packed_sequences_would_mix(architecture: str, tokenizer,
                                                                  tmp_path: Path) -> None:
    model_dir = random_model(architecture, tokenizer, tmp_path / "model")
    run = (model_dir, tokenizer, RECORDS[:4], RECORDS[4:], "graddiff", "full", {"steps": 2, "batch_size": 4})
    if architecture == "opt":  # positions from the attention mask, which packing drops
        with pytest.raises(ValueError, match=r"OPTForCausalLM does not keep packed sequences apart .* by \d+%"):
            UnlearningLoop(*run, options=RunnerOptions(padding_free=True))
        return
    padded = UnlearningLoop(*run)
    packed = UnlearningLoop(*run, options=RunnerOptions(padding_free=True))
    for _ in range(2):
        a, b = padded.step(), packed.step()
        assert all(abs(a[k] - b[k]) <= 1e-4 * max(abs(a[k]), 1.0) for k in a)


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["npo", "rmu"])
def test_the_pipeline_fine_tunes_and_unlearns_a_gpt2_base(micro_root: Path, method: str, one_thread) -> None:
    """`model: {path: <folder>}` with GPT-2: no chat template, Conv1D maps, learned positions, blocks under
    `transformer.h`. Target and retain fine-tune it, the method unlearns it under LoRA, evaluation scores the
    three models and the registered adapter names GPT-2's own maps."""
    import yaml
    from conftest import materialize_request

    from dagster_project.core.data.io import read_json
    from dagster_project.core.layout import Layout, load_params
    from dagster_project.core.model.tiny_llama import save_tokenizer

    params = yaml.safe_load((micro_root / "params.yaml").read_text())
    base = micro_root / "gpt2-base"
    tokenizer = train_tokenizer([r["answer"] for r in RECORDS], 300, base)  # byte-level: covers any text
    random_model("gpt2", tokenizer, base)
    save_tokenizer(tokenizer, base)
    params["model"] = {"path": str(base)}
    params["unlearn"][method] = {**params["unlearn"].get(method, {}), "steps": 3, "batch_size": 4}
    request = yaml.safe_load((micro_root / "data" / "requests" / "micro.yaml").read_text())
    (micro_root / "data" / "requests" / "micro.yaml").write_text(yaml.safe_dump({**request, "method": method}))
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    assert materialize_request(micro_root, "micro").success
    layout = Layout.from_params(micro_root, load_params(micro_root))
    report = read_json(layout.eval_dir / "report.json")
    assert set(report["models"]) == {"target", "retain", "unlearned"}
    assert 0.0 <= report["models"]["unlearned"]["metrics"]["forget_quality"] <= 1.0
    adapter = read_json(layout.unlearned_dir / "adapter_config.json")
    assert adapter["target_modules"] == ["c_attn", "c_fc", "c_proj"] and adapter["fan_in_fan_out"] is True
