"""The audit manifest and model card of a registered version, and `unlearn audit verify`.

The manifest (JSON, DVC-versioned beside the registry record, logged to the MLflow run with its SHA-256 as
a version tag) chains what an auditor needs: request hash → dataset md5s → validation results → mask and
adapter md5s → metrics, with code commit, seeds, an environment hash and the compute environment (CPU, its
instruction set, bf16, threads, GPU and its CUDA stack: what decides the last bits of a float result). Every md5 is DVC's, so each
artifact can be re-fetched from the DVC cache or remote and re-hashed; `verify` does that, checks the
MLflow tags and artifact against it, and re-runs the evaluation on the re-fetched bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_project.core.audit.compute import compute_differences, run_pinned
from dagster_project.core.audit.gates import GateResult
from dagster_project.core.data.io import md5_file

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


CARD_METRICS = ("forget_quality", "model_utility", "utility_ratio", "forget_rouge", "forget_fact_accuracy",
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


def cache_object(root: Path, md5: str) -> Path:
    digest = md5.removesuffix(".dir")
    return root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / (digest[2:] + (".dir" if md5.endswith(".dir") else ""))


def rehash_object(root: Path, md5: str) -> list[str]:
    """Problems re-hashing DVC object `md5` from the cache (a file, or a folder's listing and every file in
    it); [] when every byte hashes to what DVC recorded."""
    path = cache_object(root, md5)
    if not path.is_file():
        return [f"{md5} not in the DVC cache"]
    if md5_file(path) != md5.removesuffix(".dir"):
        return [f"{md5}: the cached bytes hash to {md5_file(path)}"]
    if not md5.endswith(".dir"):
        return []
    problems = []
    for entry in json.loads(path.read_text()):
        problems += [f"{entry['relpath']}: {p}" for p in rehash_object(root, entry["md5"])]
    return problems


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


def verify(root: Path, uri: str, rerun: bool = True) -> VerifyReport:
    """Re-fetch, re-hash and re-evaluate the registered version `uri` (models:/name@alias or /version)."""
    from dagster_project.core.layout import Layout
    from dagster_project.core.tracking import mlflow_registry as registry
    from dagster_project.core.tracking.dvc import fetch

    report = VerifyReport(uri)
    info = registry.resolve_version(root, uri)
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-") as tmp:
        work = Path(tmp)
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
        missing = [md5 for md5 in manifest["artifacts"].values() if not cache_object(root, md5).is_file()]
        if missing:
            fetch(root)  # from the DVC remote
        for label, md5 in sorted(manifest["artifacts"].items()):
            problems = rehash_object(root, md5)
            report.add(f"re-hash {label} from DVC", not problems, "; ".join(problems[:3]) or md5)
        model_dir = registry.download_model_version(root, f"models:/{info.name}/{info.version}", work / "registered",
                                                    rebase=False)
        mlflow_md5 = {p.relative_to(model_dir).as_posix(): md5_file(p) for p in model_dir.rglob("*") if p.is_file()}
        dvc_entries = {e["relpath"]: e["md5"] for e in json.loads(cache_object(root, manifest["artifacts"]["unlearned_adapter"]).read_text())}
        report.add("MLflow model artifact is the DVC-versioned adapter byte for byte", mlflow_md5 == dvc_entries,
                   f"{len(dvc_entries)} files")
        if not rerun or not report.passed:
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
