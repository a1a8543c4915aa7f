"""Promotion to `champion` behind the gates, and the compliance re-check of the champion.

    unlearn promote tofu-tiny-llama 3                      # gates decide
    unlearn promote tofu-tiny-llama 3 --force --reason "DPO sign-off 2026-11"
    unlearn compliance                                     # what the daily schedule runs

Requests *in force* are the ones a champion was promoted for. The registered model keeps them in its tag
`requests_in_force` (JSON: request id, version, the recall metrics it had then); a candidate is promoted
only if every earlier request in force is still forgotten by it, and the compliance run re-evaluates the
champion on all of them. Each version records the outcome in tags (`promotion`, `compliance`, ...).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_project.core.audit.gates import RECALL_METRICS, GateResult, check_gates, load_gates, recall_regressions
from dagster_project.core.layout import Layout
from dagster_project.core.tracking import mlflow_registry as registry

IN_FORCE_TAG = "requests_in_force"
COMPLIANCE_EXPERIMENT = "compliance"


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str
    request_id: str
    promoted: bool
    forced: bool
    gates: list[GateResult]

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "request_id": self.request_id, "promoted": self.promoted,
                "forced": self.forced, "gates": [g.to_dict() for g in self.gates]}


def requests_in_force(root: Path, name: str) -> list[dict[str, Any]]:
    return json.loads(registry.model_tag(root, name, IN_FORCE_TAG, "[]"))


def recheck(root: Path, params: dict[str, Any], version: registry.VersionInfo,
            entries: list[dict[str, Any]]) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """The version's model re-evaluated on each request in `entries`: request id -> (metrics now, then)."""
    from dagster_project.core.retention import clear_personal_caches
    from dagster_project.core.stages import evaluate_for_request

    if not entries:
        return {}
    with tempfile.TemporaryDirectory(prefix="unlearn-recheck-") as tmp:
        model_dir = registry.download_model_version(root, f"models:/{version.name}/{version.version}", Path(tmp))
        results = {}
        for entry in entries:
            layout = Layout.for_request(root, params, entry["request_id"])
            results[entry["request_id"]] = (evaluate_for_request(layout, params, model_dir), entry["metrics"])
            clear_personal_caches(layout)  # no cache keeps a request's answers once it is done (docs/operations.md)
        return results


def promote(root: Path, params: dict[str, Any], name: str, version: str, force: bool = False,
            reason: str = "") -> PromotionResult:
    """Move alias `champion` to `version` if every gate passes (or `force` with a `reason`, kept as a tag).

    Gates: the version's own metrics (params.yaml `promotion:`), and every other request in force still
    forgotten by this version. The outcome is tagged on the version either way; on promotion the version's
    request joins (or replaces its earlier entry in) the model's `requests_in_force`."""
    if force and not reason.strip():
        raise ValueError("--force needs --reason: a forced promotion is recorded with why it was forced")
    info = registry.require_complete(registry.resolve_version(root, f"models:/{name}/{version}"))
    request_id = info.tags.get("request_id")
    if not request_id:
        raise ValueError(f"models:/{name}/{version} has no request_id tag: not a version this pipeline registered")
    earlier = [e for e in requests_in_force(root, name) if e["request_id"] != request_id]
    results = check_gates(load_gates(params), info.metrics, recheck(root, params, info, earlier))
    passed = all(r.passed for r in results)
    promoted = passed or force
    tags = {"promotion": "passed" if passed else ("forced" if force else "failed"),
            "promotion.failed_gates": ",".join(r.gate for r in results if not r.passed) or "none"}
    if force and not passed:
        tags["promotion.reason"] = reason.strip()
    registry.set_version_tags(root, name, info.version, tags)
    if promoted:
        entry = {"request_id": request_id, "version": info.version,
                 "metrics": {k: info.metrics[k] for k in RECALL_METRICS if k in info.metrics}}
        # the tag before the alias: a run killed in between leaves the old champion with a superset of
        # requests, which the next compliance run reports, rather than a champion with unrecorded requests
        registry.set_model_tag(root, name, IN_FORCE_TAG, json.dumps(earlier + [entry], sort_keys=True))
        registry.set_alias(root, name, registry.CHAMPION, info.version)
    return PromotionResult(name, info.version, request_id, promoted, force and not passed, results)


@dataclass(frozen=True)
class ComplianceResult:
    name: str
    version: str
    passed: bool
    requests: dict[str, list[str]]  # request id -> regressions (empty: still forgotten)
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "passed": self.passed, "requests": self.requests,
                "run_id": self.run_id}


def run_compliance(root: Path, params: dict[str, Any], name: str) -> ComplianceResult:
    """Re-evaluate the champion on every request in force (forget set, paraphrase probes, relearning attack);
    log a run to MLflow experiment `compliance` and tag the version `compliance=passed|failed`."""
    info = registry.champion_version(root, name)
    if info is None:  # nothing promoted yet: nothing is in force
        return ComplianceResult(name, "", True, {}, "")
    entries = requests_in_force(root, name)
    tolerance = load_gates(params).regression_tolerance
    checked = recheck(root, params, info, entries)
    regressions = {request_id: recall_regressions(now, then, tolerance) for request_id, (now, then) in checked.items()}
    passed = not any(regressions.values())
    metrics = {f"{request_id}/{key}": now[key] for request_id, (now, _then) in checked.items()
               for key in RECALL_METRICS if key in now}
    metrics["requests_checked"] = len(checked)
    metrics["requests_regressed"] = sum(bool(r) for r in regressions.values())
    _client, run = registry.log_run(root, f"{name}-v{info.version}", {"version": info.version, "tolerance": tolerance},
                                    metrics, {"compliance": "passed" if passed else "failed", "model_name": name,
                                              "model_version": info.version}, experiment=COMPLIANCE_EXPERIMENT)
    registry.set_version_tags(root, name, info.version, {"compliance": "passed" if passed else "failed",
                                                         "compliance.run_id": run.info.run_id})
    return ComplianceResult(name, info.version, passed, regressions, run.info.run_id)
