"""`unlearn audit reproduce`: re-create a registered version from scratch with `dvc repro` and compare.

    unlearn audit reproduce models:/tofu-tiny-llama/6

A fresh, empty store in a temporary folder gets only what the version's audit manifest holds: the params
it ran with and its normalised request (read back from the DVC cache by md5). `dvc repro` then rebuilds
corpus, tokenizer, target and retain models, datasets, unlearning and evaluation there with no cache to
lean on, and every artifact's md5 and every metric is compared with the manifest. The CPU path is
deterministic, so a faithful reproduction on the same hardware matches byte for byte. The rebuild runs
with the version's ATen instruction set, thread count and (where it was off) bf16, unless the user set
them (`pinned_compute_variables`), and the report says whether its compute environment is the version's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dagster_project.core.audit.compute import pinned_compute_variables, run_pinned
from dagster_project.core.audit.manifest import (
    METRIC_TOLERANCE,
    VerifyReport,
    add_compute_check,
    fetch_manifest,
    metric_difference,
)
from dagster_project.core.tracking.dvc import cache_object, object_listing


def reproduce(root: Path, uri: str, write_dvc_yaml: Callable[[Path, dict[str, Any]], Any]) -> VerifyReport:
    """Rebuild the version `uri` in a temporary store with `dvc repro` (its `write_dvc_yaml(root, params)`
    generates the stages) and check each artifact md5 and metric against its manifest."""
    from dagster_project.core.layout import Layout
    from dagster_project.core.stages import AUDITED, STAGES, git_commit
    from dagster_project.core.tracking import mlflow_registry as registry
    from dagster_project.core.tracking.dvc import ensure_repo, locked_outs

    report = VerifyReport(uri)
    info = registry.resolve_version(root, uri)
    with tempfile.TemporaryDirectory(prefix="unlearn-reproduce-") as tmp:
        manifest = fetch_manifest(root, info, Path(tmp), report)
        if manifest is None:
            return report
        now = git_commit(root)
        report.add(f"code: the version ran {manifest['git_commit'][:12]}, reproducing with {now[:12]}", True,
                   "same commit" if now == manifest["git_commit"] else "different code: a mismatch below may be the code's")
        request_object = cache_object(root, manifest["artifacts"]["request"])
        if not report.add("the request is in the DVC cache", request_object.is_file(), manifest["artifacts"]["request"]):
            return report
        request = json.loads(request_object.read_text())
        store = Path(tmp) / "store"
        params = manifest["params"]
        request_file = f"{params['requests_dir']}/{request['id']}.yaml"
        (store / params["requests_dir"]).mkdir(parents=True)
        (store / request_file).write_text(yaml.safe_dump({k: v for k, v in request.items() if v is not None}))
        (store / "params.yaml").write_text(yaml.safe_dump({**params, "request": request_file}))
        copied = copy_user_inputs(root, store, params, request)
        if copied:
            report.add(f"your source files and documents copied from {root.name}/ as they are now", True,
                       f"{copied} file(s); a rebuilt md5 below that differs means a file changed since the version")
        ensure_repo(store)
        write_dvc_yaml(store, {**params, "request": request_file})
        layout = Layout(root=store, request_file=request_file)
        bin_dir = str(Path(sys.executable).parent)  # dvc.yaml's `unlearn stage ...` comes from this environment
        env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MLFLOW_TRACKING_URI": "",
               **pinned_compute_variables(manifest.get("compute"))}
        add_compute_check(report, manifest, run_pinned(None, Path(tmp), env=env)["compute"])  # env is pinned already
        # the evaluation and everything upstream of it, and the cleaned training set, which nothing downstream reads
        targets = [STAGES[name].key(layout) for name in ("evaluation", "cleaned_training_set")]
        run = subprocess.run([str(Path(bin_dir) / "dvc"), "repro", *targets], cwd=store,
                             env=env, capture_output=True, text=True, check=False)
        if not report.add("dvc repro rebuilt the request up to its evaluation", run.returncode == 0,
                          run.stderr.strip().splitlines()[-1] if run.returncode else ""):
            return report
        for label, (stage, path) in sorted(AUDITED.items()):
            recorded = manifest["artifacts"].get(label)
            if recorded in (None, "uncommitted"):
                continue
            rebuilt = locked_outs(store, STAGES[stage].key(layout)).get(layout.rel(path(layout)), "missing")
            report.add(f"rebuilt {label} has the version's md5", rebuilt == recorded,
                       rebuilt if rebuilt == recorded else f"{rebuilt}; {_differing_files(root, recorded, store, rebuilt)}")
        metrics = json.loads((layout.eval_dir / "report.json").read_text())["models"]["unlearned"]["metrics"]
        worst = max((metric_difference(metrics[k], v), k) for k, v in manifest["metrics"].items() if k in metrics)
        report.add(f"rebuilt metrics match the version's (|Δ| ≤ {METRIC_TOLERANCE:g})", worst[0] <= METRIC_TOLERANCE,
                   f"largest |Δ| {worst[0]:.2g} ({worst[1]})")
    return report


def copy_user_inputs(root: Path, store: Path, params: dict[str, Any], request: dict[str, Any]) -> int:
    """The files a request on the user's own data reads but DVC does not cache (its declared source files, its
    attached documents), copied into the rebuild's store at the same relative paths; how many were copied."""
    import shutil

    from dagster_project.core.sources.load import declared_sources, source_path

    paths = [source_path(spec, root) for specs in declared_sources(params).values() for spec in specs]
    paths += [root / params["requests_dir"] / request["id"] / name for name in request.get("documents") or []]
    copied = 0
    for path in paths:
        if not path.exists() or not path.resolve().is_relative_to(root.resolve()):
            continue  # a file outside the root, or gone: its source stage fails, and the report says so
        target = store / path.resolve().relative_to(root.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copyfile)(path, target)
        copied += 1 if path.is_file() else sum(1 for p in path.rglob("*") if p.is_file())
    return copied


def _differing_files(root: Path, recorded: str, store: Path, rebuilt: str) -> str:
    """Which files of a folder artifact differ between the version (`root`'s DVC cache) and the rebuild."""
    if not (recorded.endswith(".dir") and rebuilt.endswith(".dir")) or not cache_object(root, recorded).is_file():
        return "not comparable file by file"
    listing, again = object_listing(root, recorded), object_listing(store, rebuilt)
    return "differing files: " + ", ".join(sorted(f for f in listing.keys() | again.keys() if listing.get(f) != again.get(f)))
