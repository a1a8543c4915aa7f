"""Generate `dvc.yaml` from the Dagster asset graph, so there is one DAG and DVC only stores bytes.

    unlearn dvc-yaml            # write dvc.yaml for every request file in data/requests/
    unlearn dvc-yaml --check    # exit 1 if the committed dvc.yaml is stale

One stage per asset: `cmd` runs the same core stage function through the CLI, deps are the
upstream assets' outputs (plus raw inputs such as the request file), params the sections of
params.yaml the stage reads, outs the files the stage writes. Shared assets (corpus, tokenizer,
target model) are one stage; per-request assets (Dagster's `requests` partitions) are a `foreach`
over the request files, so DVC names them `<asset>@<request id>` in dvc.lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from dagster_project.core.data.request import scan_requests
from dagster_project.core.layout import Layout
from dagster_project.core.stages import STAGES

# assets that act on the MLflow registry, not on files: nothing for DVC to reproduce (their CLI faces in comments)
REGISTRY_ONLY = frozenset({"champion",  # unlearn promote <name> <version>
                           "champion_compliance"})  # unlearn compliance
HEADER = "# Generated from the Dagster asset graph by `unlearn dvc-yaml`; do not edit by hand.\n"


def asset_graph_order() -> list[tuple[str, list[str]]]:
    """(asset name, upstream asset names) for every asset, in topological order."""
    from dagster_project.definitions import defs

    graph = defs().resolve_asset_graph()
    order = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        order.append((key.to_user_string(), sorted(k.to_user_string() for k in node.parent_keys)))
    return order


def request_files(root: Path, params: dict) -> dict[str, str]:
    """request id -> request file (relative to the root) for every *valid* request file in `requests_dir`
    (an invalid one gets no stages: the sensor reports it instead)."""
    valid, _invalid = scan_requests(root / params["requests_dir"], params, Layout.from_params(root, params).corpus_dir)
    return {request_id: Layout.for_request(root, params, request_id).request_file for request_id in valid}


def build_dvc_yaml(root: Path, params: dict) -> dict:
    requests = request_files(root, params)
    # per-request paths with DVC's foreach placeholders: ${key} = request id, ${item} = its file
    layout = Layout(root=root.resolve(), request_file="${item}", request_key="${key}")
    stages = {}
    for name, parents in asset_graph_order():
        if name in REGISTRY_ONLY:
            continue
        if name not in STAGES:
            raise KeyError(f"asset {name!r} has no core stage in dagster_project/core/stages.py")
        stage = STAGES[name]
        deps = [layout.rel(p) for p in stage.inputs(layout, params)]
        deps += [layout.rel(p) for parent in parents for p in STAGES[parent].paths(layout, params)]
        entry: dict = {"cmd": f"unlearn stage {name}" + ("" if stage.shared else " --request ${key}")}
        if deps:
            entry["deps"] = deps
        read = [section for section in stage.params if section in params]  # DVC refuses a key params.yaml lacks
        if read:
            entry["params"] = read
        outs = [layout.rel(p) for p in stage.paths(layout, params)]
        if not outs:  # writes nothing here (a source stage on the embedded corpus)
            continue
        entry["outs"] = outs if stage.cache else [{out: {"cache": False}} for out in outs]
        if stage.shared:
            stages[name] = entry
        elif requests:
            stages[name] = {"foreach": dict(requests), "do": entry}  # a copy each: no YAML anchors
    return {"stages": stages}


def render(root: Path, params: dict) -> str:
    return HEADER + yaml.safe_dump(build_dvc_yaml(root, params), sort_keys=False)


def write_or_check(root: Path, params: dict, check: bool) -> bool:
    """Write dvc.yaml (or compare it); return True when the file on disk is up to date."""
    path = root / "dvc.yaml"
    expected = render(root, params)
    current = path.read_text() if path.exists() else ""
    if check:
        return current == expected
    if current != expected:  # atomically: a DVC commit in a parallel run may be reading it
        tmp = path.with_name(f".dvc.yaml.{os.getpid()}.tmp")  # one per process: runs of other requests write too
        tmp.write_text(expected)
        tmp.replace(path)
    return True


def stage_names_in(path: Path) -> list[str]:
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))
