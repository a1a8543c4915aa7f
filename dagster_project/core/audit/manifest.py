"""The audit manifest and model card of a registered version, and `unlearn audit verify`.

The manifest (JSON, DVC-versioned beside the registry record, logged to the MLflow run with its SHA-256 as
a version tag) chains what an auditor needs: request hash → dataset md5s → validation results → mask and
adapter md5s → metrics, with code commit, seeds, an environment hash and the compute environment (CPU, its
instruction set, bf16, threads, GPU and its CUDA stack: what decides the last bits of a float result). Every md5 is DVC's, so each
artifact can be re-fetched from the DVC cache or remote and re-hashed; `verify` does that for the cache, the
remote and the workspace copy, checks every MLflow run artifact and tag against the registration record
(mlflow_registry.RECORD_FILE), and re-runs the evaluation on the re-fetched bytes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from dagster_project.core.audit.compute import compute_differences, run_pinned
from dagster_project.core.audit.gates import GateResult
from dagster_project.core.data.io import folder_md5s, md5_file, sha256_text
from dagster_project.core.tracking.dvc import cache_object, object_listing

MANIFEST_FORMAT = "unlearn-audit/1"
MANIFEST_FILE, CARD_FILE = "audit_manifest.json", "model_card.md"
METRIC_TOLERANCE = 1e-6  # re-run evaluation vs recorded metrics (CPU is deterministic: 0 in practice)


def environment_hash() -> str:
    """SHA-256 of the Python version, machine type and every installed distribution's name==version."""
    packages = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions()
                      if d.metadata["Name"])
    payload = json.dumps({"python": sys.version.split()[0], "machine": platform.machine(), "packages": packages})
    return hashlib.sha256(payload.encode()).hexdigest()


def add_compute_check(report: VerifyReport, manifest: dict[str, Any], now: dict[str, Any]) -> None:
    """An informational line (never a failure): whether `now`, the compute environment a re-run used,
    computes like the version did, so a metric or md5 mismatch further down can be read as the hardware's
    or not."""
    differences = compute_differences(manifest.get("compute"), now)
    report.add("compute environment " + ("differs from" if differences else "matches") + " the version's", True,
               "; ".join(differences) + " (bit-exact results are not expected across hardware: a mismatch below "
               "may be the hardware's)" if differences else "same CPU, instruction set, bf16, threads, GPU and CUDA")


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gates_table(gates: list[GateResult]) -> str:
    rows = "\n".join(f"| {g.gate} | {'pass' if g.passed else 'FAIL'} | {g.detail} |" for g in gates)
    return f"| gate | result | detail |\n|---|---|---|\n{rows}"


CARD_METRICS = ("forget_quality", "model_utility", "utility_ratio", "retain_fact_ratio", "forget_rouge", "forget_fact_accuracy",
                "forget_gibberish_rate", "forget_refusal_rate", "relearn_rouge_after", "mia_min_k_auc",
                "general_knowledge_ratio")
DOCUMENT_CARD_METRICS = ("forget_probe_top1", "probe_chance", "paraphrase_probe_top1", "forget_probe_containment",
                         "model_utility", "utility_ratio", "hard_positive_probe_ratio", "general_knowledge_ratio",
                         "forget_gibberish_rate", "forget_refusal_rate", "forget_leak_rate", "relearn_probe_top1_after",
                         "mia_loss_auc")


def model_card(manifest: dict[str, Any], gates: list[GateResult], heading: str) -> str:
    """A version's model card in Markdown: what was forgotten (hashes and counts only), how, how well, gates."""
    request, metrics = manifest["request"], manifest["metrics"]
    own_data = manifest.get("data") == "sources"
    shown = DOCUMENT_CARD_METRICS if own_data else CARD_METRICS
    metric_rows = "\n".join(f"| {k} | {metrics[k]:.4g} |" for k in shown if k in metrics)
    artifacts = "\n".join(f"| {label} | `{md5}` |" for label, md5 in sorted(manifest["artifacts"].items()))
    counts = manifest["counts"]
    collection = manifest.get("collection") or {}
    found = (f" Collected from the sources: {json.dumps(collection.get('per_source', {}), sort_keys=True)} by "
             f"{json.dumps(collection.get('per_match', {}), sort_keys=True)} (threshold {collection.get('threshold')}); "
             f"{counts.get('documents', 0)} attached document(s), {counts.get('record_ids', 0)} record id(s) named. "
             f"The training data without these records is the `cleaned_training_set` artifact below: any later "
             f"fine-tune must use it." if own_data else "")
    return f"""# Model card: {manifest['model_name']}, request `{request['id']}`

## What was forgotten
Request file SHA-256 `{request['sha256']}`; subjects SHA-256 `{request['subjects_sha256']}`; split
`{request['split'] or '-'}`; {manifest['counts']['forget_records']} forget records of
{manifest['counts']['forget_subjects']} subject(s).{found} The text itself is personal data and is not in this card.

## How
Method `{request['method']}` ({request['mode']}), forget data `{request['forget_data']}`, WAGLE
`{request['wagle']}`; hyper-parameters `{json.dumps(manifest['hyperparameters'], sort_keys=True)}`; seeds
`{json.dumps(manifest['seeds'], sort_keys=True)}`; code `{manifest['git_commit']}`; environment
`{manifest['environment_sha256'][:16]}`; compute `{json.dumps(manifest['compute'], sort_keys=True)}`.

## Metrics ({"knowledge probes against the target model; no retain model" if own_data else
              "against the target and retain models of this request"})
| metric | value |
|---|---|
{metric_rows}

## {heading}
{gates_table(gates)}

## Artifacts (DVC md5)
| artifact | md5 |
|---|---|
{artifacts}
"""


# ------------------------------------------------------------------------------------------------ verify


@dataclass
class VerifyReport:
    uri: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)

    def add(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((what, ok, detail))
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "passed": self.passed,
                "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in self.checks]}

    def render(self) -> str:
        lines = [f"audit verify {self.uri}"]
        lines += [f"  [{'ok' if ok else 'FAIL'}] {what}" + (f": {detail}" if detail else "") for what, ok, detail in self.checks]
        lines.append(f"result: {'PASSED' if self.passed else 'FAILED'} "
                     f"({sum(ok for _, ok, _ in self.checks)}/{len(self.checks)} checks)")
        return "\n".join(lines)


def open_cached(root: Path, md5: str) -> BinaryIO | None:
    """DVC object `md5` from the cache of `root`, opened; None when the cache lacks it."""
    path = cache_object(root, md5)
    return path.open("rb") if path.is_file() else None


def object_problems(md5: str, open_object: Callable[[str], BinaryIO | None], where: str) -> list[str]:
    """Problems re-hashing DVC object `md5` (a file, or a folder's listing and every file in it) as
    `open_object` reads it from `where` (the DVC cache, the remote); [] when every byte hashes to what DVC
    recorded."""
    handle = open_object(md5)
    if handle is None:
        return [f"{md5} not in {where}"]
    with handle:
        listing = handle.read() if md5.endswith(".dir") else None
        digest = hashlib.file_digest(handle, "md5") if listing is None else hashlib.md5(listing)
    if digest.hexdigest() != md5.removesuffix(".dir"):
        return [f"{md5}: the bytes in {where} hash to {digest.hexdigest()}"]
    if listing is None:
        return []
    problems = []
    for entry in json.loads(listing):
        problems += [f"{entry['relpath']}: {p}" for p in object_problems(entry["md5"], open_object, where)]
    return problems


def cached_listing(root: Path, md5: str) -> dict[str, str] | None:
    """{relative path: md5} of folder object `md5` from the DVC cache; None when its listing is missing or
    does not hash to `md5` (the cache check reports that)."""
    path = cache_object(root, md5)
    if not path.is_file() or md5_file(path) != md5.removesuffix(".dir"):
        return None
    return object_listing(root, md5)


def workspace_problems(root: Path, path: Path, md5: str) -> list[str]:
    """How the workspace copy at `path` differs from DVC object `md5` (its files, for a folder)."""
    if not md5.endswith(".dir"):
        digest = md5_file(path) if path.is_file() else "a folder"
        return [] if digest == md5 else [f"{path.name} hashes to {digest}, the version's is {md5}"]
    expected = cached_listing(root, md5) or {}
    found = folder_md5s(path)
    return ([f"{rel} hashes to {found[rel]}, the version's is {want}" for rel, want in expected.items()
             if rel in found and found[rel] != want]
            + [f"{rel} is missing" for rel in expected if rel not in found]
            + [f"{rel} is not the version's" for rel in found if rel not in expected])


def checkout_object(root: Path, md5: str, dst: Path) -> Path:
    """Materialise DVC object `md5` (file or folder) at `dst` from the cache."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    path = cache_object(root, md5)
    if not md5.endswith(".dir"):
        shutil.copyfile(path, dst)
        return dst
    for entry in json.loads(path.read_text()):
        checkout_object(root, entry["md5"], dst / entry["relpath"])
    return dst


def metric_difference(a: float, b: float) -> float:
    """|a − b|, 0 when both are NaN (a metric undefined both times agrees), inf when only one is."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def fetch_manifest(root: Path, info: Any, work: Path, report: VerifyReport) -> dict[str, Any] | None:
    """The version's audit manifest from its MLflow run, checked against the version's SHA-256 tag and the
    format (both recorded in `report`); None when the hash disagrees (nothing in it can be trusted)."""
    from dagster_project.core.tracking import mlflow_registry as registry

    manifest_path = registry.download_run_file(root, info.run_id, f"audit/{MANIFEST_FILE}", work / "mlflow")
    sha = manifest_sha256(manifest_path)
    if not report.add("manifest hash matches the version tag", sha == info.tags.get("audit_manifest_sha256"),
                      f"sha256 {sha[:16]}"):
        return None
    manifest = json.loads(manifest_path.read_text())
    report.add("manifest format", manifest.get("format") == MANIFEST_FORMAT, str(manifest.get("format")))
    return manifest


def check_registration(root: Path, info: Any, work: Path, report: VerifyReport) -> None:
    """The version's registration record (its hash against the version tag), the version's tags and every
    file of its MLflow run against the record: one failure line per tag set or file that differs."""
    from dagster_project.core.tracking import mlflow_registry as registry

    text = registry.registration_record(root, info, work / "record")
    sha = sha256_text(text) if text is not None else "missing from the run"
    if not report.add("registration record matches the version tag", sha == info.tags.get(registry.RECORD_SHA_TAG),
                      f"sha256 {sha[:16]}"):
        return
    record = json.loads(text)
    changed = sorted(k for k, v in record["tags"].items() if info.tags.get(k) != v)
    report.add("version tags match the registration record", not changed,
               f"differ: {', '.join(changed)}" if changed else f"{len(record['tags'])} tags")
    run_dir = work / "run"
    for folder in sorted({path.split("/", 1)[0] for path in record["artifacts"]}):
        registry.download_run_file(root, info.run_id, folder, run_dir)
    held = folder_md5s(run_dir)
    failures = {path: f"hashes to {held[path]}, registered {md5}" if path in held else "missing from the run"
                for path, md5 in record["artifacts"].items() if held.get(path) != md5}
    failures |= {path: "in the run, not in the registration record" for path in held if path not in record["artifacts"]}
    for path, detail in sorted(failures.items()):
        report.add(f"MLflow copy of {path}", False, detail)
    if not failures:
        report.add("MLflow run artifacts match the registration record", True, f"{len(held)} files")


def check_dvc_copies(root: Path, manifest: dict[str, Any], report: VerifyReport) -> None:
    """Each DVC-versioned artifact of the manifest in every copy there is: the DVC cache, the default remote
    and the workspace, whose dvc.lock entry must agree. One failure line per copy that differs, else one
    line per artifact."""
    import yaml

    from dagster_project.core.layout import Layout
    from dagster_project.core.stages import AUDITED, STAGES
    from dagster_project.core.tracking.dvc import all_locked_outs, fetch, remote_objects

    from dagster_project.core.retention import purge_record

    # a purged request's text artifacts are gone by design: their md5s in the purge record stand for them
    purged = purge_record(root, manifest["request"]["id"]) or {"outputs": {}}
    purged_md5s = set(purged["outputs"].values())
    artifacts = {}
    for label, md5 in sorted(manifest["artifacts"].items()):
        if md5 in purged_md5s:
            report.add(f"{label} purged", True, f"{md5} removed on {purged['purged_at']} (`unlearn request purge`); "
                                                  f"the md5 is in the purge record")
        else:
            artifacts[label] = md5
    if any(not cache_object(root, md5).is_file() for md5 in artifacts.values()):
        fetch(root)  # from the DVC remote
    layout = Layout(root=root, request_file=f"{manifest['params']['requests_dir']}/{manifest['request']['id']}.yaml")
    # label -> (workspace path, its path in dvc.lock); labels of older manifests that no stage writes now: none
    workspace = {label: (AUDITED[label][1](layout), layout.rel(AUDITED[label][1](layout)))
                 for label in artifacts if label in AUDITED}
    try:
        lock = all_locked_outs(root)
        locked = {label: lock.get(STAGES[AUDITED[label][0]].key(layout), {}).get(where)
                  for label, (_path, where) in workspace.items()}
    except yaml.YAMLError as error:
        report.add("dvc.lock parses", False, f"{str(error).splitlines()[0]}; restore it from version control")
        locked = {}
    with remote_objects(root) as open_remote:
        for label, md5 in sorted(artifacts.items()):
            failures, copies = {}, []
            for store, opener in (("DVC cache", functools.partial(open_cached, root)), ("DVC remote", open_remote)):
                problems = object_problems(md5, opener, f"the {store}") if opener else []
                if problems:
                    failures[f"{store} copy of {label}"] = "; ".join(problems[:3])
                copies.append(store if opener else f"no {store} configured")
            path, where = workspace.get(label, (None, None))
            if path is None or not path.exists():
                copies.append(f"workspace: {where or label} not checked out")
            elif f"DVC cache copy of {label}" not in failures:  # the cache holds the folder listing compared with
                differs = workspace_problems(root, path, md5)
                if differs and locked.get(label) == md5:
                    failures[f"workspace copy of {label} ({where})"] = "; ".join(differs[:3])
                elif not differs and locked.get(label) not in (None, md5):
                    failures[f"dvc.lock entry of {label} ({where})"] = (f"records {locked[label]}; the version and "
                                                                        f"the workspace hold {md5}")
                elif differs:  # dvc.lock names another build (or none): the workspace is not meant to hold this one
                    copies.append(f"workspace: {where} holds another build (dvc.lock: {locked.get(label)})")
                else:
                    copies.append(f"workspace ({where})")
            for what, detail in failures.items():
                report.add(what, False, detail)
            if not failures:
                report.add(f"copies of {label} hash to the version's md5", True, f"{md5}: {', '.join(copies)}")


def verify(root: Path, uri: str, rerun: bool = True) -> VerifyReport:
    """Re-fetch, re-hash and re-evaluate the registered version `uri` (models:/name@alias or /version): its
    registration complete, its MLflow run against its registration record, every DVC-versioned artifact in
    the cache, the remote and the workspace, and its evaluation re-run on the re-fetched bytes."""
    from dagster_project.core.layout import Layout
    from dagster_project.core.tracking import mlflow_registry as registry

    report = VerifyReport(uri)
    try:
        info = registry.resolve_version(root, uri)
        incomplete = info.incomplete
    except registry.IncompleteVersion as error:  # an alias on an incomplete version
        incomplete = str(error)
    if not report.add("registration complete", not incomplete, incomplete or f"{len(info.metrics)} metric tags"):
        return report  # nothing in a half-registered version can be checked against its record
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-") as tmp:
        work = Path(tmp)
        check_registration(root, info, work, report)
        manifest = fetch_manifest(root, info, work, report)
        if manifest is None:
            return report
        tag_md5s = {k.removeprefix("dvc_md5."): v for k, v in info.tags.items() if k.startswith("dvc_md5.")}
        disagree = sorted(k for k, v in manifest["artifacts"].items() if k in tag_md5s and tag_md5s[k] != v)
        report.add("MLflow md5 tags agree with the manifest", not disagree, ", ".join(disagree))
        metric_tags = info.metrics
        off = sorted(k for k, v in metric_tags.items() if k in manifest["metrics"]
                     and abs(manifest["metrics"][k] - v) > 1e-5 * max(1.0, abs(v)))
        report.add("MLflow metric tags agree with the manifest", not off, ", ".join(off))
        report.add("git commit tag agrees", info.tags.get("git_commit") == manifest["git_commit"], manifest["git_commit"][:12])
        check_dvc_copies(root, manifest, report)
        model_dir = registry.download_model_version(root, f"models:/{info.name}/{info.version}", work / "registered",
                                                    rebase=False)
        mlflow_md5 = folder_md5s(model_dir)
        dvc_entries = cached_listing(root, manifest["artifacts"]["unlearned_adapter"]) or {}
        report.add("MLflow model artifact is the DVC-versioned adapter byte for byte", mlflow_md5 == dvc_entries,
                   f"{len(dvc_entries)} files")
        if not rerun or not report.passed:
            return report
        if any(what.endswith(" purged") for what, _ok, _detail in report.checks):
            report.add("evaluation re-run", True, "skipped: the request's data was purged, so only hashes can be "
                                                  "checked (they were, above)")
            return report
        # rebuild the request's artifact store from DVC objects only, and evaluate there with a cold cache
        layout = Layout(root=work / "store", request_file=f"data/requests/{manifest['request']['id']}.yaml")
        own_data = manifest.get("data") == "sources"  # the documents report reads probes and sources, no retain model
        needed = ({"request": layout.request_json, "knowledge_probes": layout.probes_dir,
                   "nonmember_source": layout.source_dir("nonmember"), "revealed_forget_set": layout.revealed_dir}
                  if own_data else {"corpus": layout.corpus_dir, "retain_model": layout.retain_model_dir,
                                    "knowledge_probes": layout.probes_dir})
        needed |= {"target_model": layout.target_model_dir, "forget_set": layout.forget_set,
                   "retain_set": layout.retain_set, "unlearned_adapter": layout.unlearned_dir}
        for label, path in needed.items():
            if label in manifest["artifacts"]:  # versions registered before an artifact existed lack it
                checkout_object(root, manifest["artifacts"][label], path)
        adapter_config = layout.unlearned_dir / "adapter_config.json"
        if adapter_config.exists():  # a LoRA adapter names its base model's folder: point it at the rebuilt one
            config = json.loads(adapter_config.read_text())
            adapter_config.write_text(json.dumps({**config, "base_model_name_or_path": str(layout.target_model_dir)}))
        child = run_pinned(manifest.get("compute"), work, evaluate={
            "root": str(layout.root), "request_file": layout.request_file,
            "params": {**manifest["params"], "eval": manifest["eval"]}, "model_dir": str(layout.unlearned_dir)})
        add_compute_check(report, manifest, child["compute"])
        metrics = child["metrics"]
        worst = max((metric_difference(metrics[k], v), k) for k, v in manifest["metrics"].items() if k in metrics)
        report.add(f"re-run evaluation matches the recorded metrics (|Δ| ≤ {METRIC_TOLERANCE:g})",
                   worst[0] <= METRIC_TOLERANCE, f"largest |Δ| {worst[0]:.2g} ({worst[1]}) over {len(manifest['metrics'])} metrics")
    return report
