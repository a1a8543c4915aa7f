"""Profiles: ready-made pipeline roots for tiers other than the embedded default.

    unlearn profile init real --root .runs/real --set corpus.n_people=20
    UNLEARN_ROOT=.runs/real dagster job execute -m dagster_project.definitions -j unlearn_request \\
        --tags '{"dagster/partition": "real-forget10"}'

A profile is a params file plus the request it names, shipped in `dagster_project/profiles/`; a profile with a
folder of its own name (the worked examples) brings every file in it too, at the same paths (its sources under
data/sources/, its request and attached documents under data/requests/). A root is a self-contained store (its own assets/, DVC repo and remote, MLflow store, dvc.yaml), so a real-model run
never overwrites the embedded default's artifacts; the code, Dagster definitions and CLI are the same.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dagster_project.core.layout import load_params


def available_profiles() -> list[str]:
    folder = resources.files("dagster_project.profiles")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir()
                  if p.name.endswith(".yaml") and "request" in yaml.safe_load(p.read_text()))


def profile_params(name: str) -> dict[str, Any]:
    if name not in available_profiles():
        raise ValueError(f"profile {name!r}: unknown; available: {', '.join(available_profiles())}")
    return yaml.safe_load(resources.files("dagster_project.profiles").joinpath(f"{name}.yaml").read_text())


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`{"corpus.n_people": 20}` sets params["corpus"]["n_people"]; every key must name an existing setting
    (a typo would otherwise be ignored silently) except inside the free-form `unlearn.<method>` sections."""
    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                if parents[:i] == ["unlearn"]:
                    node[part] = {}
                else:
                    raise ValueError(f"--set {dotted}: {'.'.join(parents[: i + 1])} is not a section of the profile")
            node = node[part]
        if leaf not in node and parents[:1] != ["unlearn"]:
            raise ValueError(f"--set {dotted}: no such setting; {'.'.join(parents) or 'top level'} has "
                             f"{', '.join(sorted(node))}")
        node[leaf] = value
    return out


def profile_files(folder: Any, prefix: str = "") -> dict[str, bytes]:
    """Relative path -> bytes of every file under a profile's folder (a package resource)."""
    files = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            files.update(profile_files(entry, f"{prefix}{entry.name}/"))
        elif not entry.name.startswith("."):
            files[prefix + entry.name] = entry.read_bytes()
    return files


def init_profile(name: str, root: Path, overrides: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write profile `name` (with `overrides`) into `root`: params.yaml, its request file, a DVC repo with a
    local remote, and dvc.yaml. Refuses to overwrite another params.yaml unless `force`."""
    from dagster_project.core.tracking.dvc import ensure_repo
    from dagster_project.dvc_yaml import write_or_check

    params = apply_overrides(profile_params(name), overrides or {})
    params_path = root / "params.yaml"
    text = f"# profile {name} (unlearn profile init)\n" + yaml.safe_dump(params, sort_keys=False)
    if params_path.exists() and params_path.read_text() != text and not force:
        raise FileExistsError(f"{params_path} exists with other settings; pass --force to overwrite it")
    folder = resources.files("dagster_project.profiles").joinpath(name)
    if folder.is_dir():
        for relative, content in profile_files(folder).items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(content)
    else:
        request_text = resources.files("dagster_project.profiles").joinpath(Path(params["request"]).name).read_text()
        (root / params["requests_dir"]).mkdir(parents=True, exist_ok=True)
        (root / params["request"]).write_text(request_text)
    params_path.write_text(text)
    load_params(root)  # the written file is a complete params file
    ensure_repo(root, remote_url=str((root / ".dvc-storage").resolve()))
    write_or_check(root, params, check=False)
    return root
