"""Generate `dvc.yaml` from the Dagster asset graph, so there is one DAG and DVC only stores bytes.

    unlearn dvc-yaml            # write dvc.yaml for the request in params.yaml
    unlearn dvc-yaml --check    # exit 1 if the committed dvc.yaml is stale

One stage per asset: `cmd` runs the same core stage function through the CLI, deps are the
upstream assets' outputs (plus raw inputs such as the request file), params the sections of
params.yaml the stage reads, outs the files the stage writes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

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


def build_dvc_yaml(layout: Layout) -> dict:
    stages = {}
    for name, parents in asset_graph_order():
        if name in REGISTRY_ONLY:
            continue
        if name not in STAGES:
            raise KeyError(f"asset {name!r} has no core stage in dagster_project/core/stages.py")
        stage = STAGES[name]
        deps = [layout.rel(p) for p in stage.inputs(layout)]
        deps += [layout.rel(p) for parent in parents for p in STAGES[parent].outs(layout)]
        entry: dict = {"cmd": f"unlearn stage {name}"}
        if deps:
            entry["deps"] = deps
        if stage.params:
            entry["params"] = list(stage.params)
        outs = [layout.rel(p) for p in stage.outs(layout)]
        entry["outs"] = outs if stage.cache else [{out: {"cache": False}} for out in outs]
        stages[name] = entry
    return {"stages": stages}


def render(layout: Layout) -> str:
    return HEADER + yaml.safe_dump(build_dvc_yaml(layout), sort_keys=False)


def write_or_check(layout: Layout, check: bool) -> bool:
    """Write dvc.yaml (or compare it); return True when the file on disk is up to date."""
    path = layout.root / "dvc.yaml"
    expected = render(layout)
    current = path.read_text() if path.exists() else ""
    if check:
        return current == expected
    path.write_text(expected)
    return True


def stage_names_in(path: Path) -> list[str]:
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))
