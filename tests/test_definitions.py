"""The code location loads, every job/schedule/sensor resolves, and dvc.yaml matches the asset graph."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_project.core.layout import Layout, load_params
from dagster_project.core.stages import STAGES
from dagster_project.definitions import defs
from dagster_project.dvc_yaml import REGISTRY_ONLY, asset_graph_order, render, stage_names_in


def test_definitions_load_and_every_job_schedule_sensor_resolves() -> None:
    definitions = defs()
    repository = definitions.get_repository_def()
    jobs = repository.get_all_jobs()
    assert {job.name for job in jobs} >= {"unlearn_request", "promote_candidate", "compliance", "__ASSET_JOB"}
    for job in jobs:
        assert job.graph.node_defs
    for schedule in definitions.schedules or []:
        repository.get_schedule_def(schedule.name)
    for sensor in definitions.sensors or []:
        repository.get_sensor_def(sensor.name)
    # a string selection goes through Dagster's antlr parser: fails if dvc's antlr 4.9 pin wins
    assert dg.AssetSelection.from_string("group:models").resolve(definitions.resolve_asset_graph())


def test_every_asset_is_a_core_stage_and_checks_are_blocking() -> None:
    definitions = defs()
    names = {name for name, _parents in asset_graph_order()}
    assert names == set(STAGES) | REGISTRY_ONLY  # registry-only: promotion and compliance act on MLflow
    checks = list(definitions.asset_checks)
    # corpus, the four sources, forget set, retain set (disjointness), SNAP data, revealed forget set, probes
    assert len(checks) == 10
    assert all(spec.blocking for check in checks for spec in check.check_specs)
    # the whole-request job leaves promotion and compliance to their own jobs; the daily schedule runs compliance
    request_job = definitions.get_job_def("unlearn_request")
    assert not {"champion", "champion_compliance"} & {k.to_user_string() for k in request_job.asset_layer.executable_asset_keys}
    (schedule,) = definitions.schedules
    assert schedule.job_name == "compliance" and schedule.cron_schedule == "0 6 * * *"


def test_committed_dvc_yaml_is_generated_from_the_graph(repo_root: Path) -> None:
    params = load_params(repo_root)
    assert (repo_root / "dvc.yaml").read_text() == render(repo_root, params), "dvc.yaml is stale: run `unlearn dvc-yaml`"
    layout = Layout.from_params(repo_root, params)
    writes_files = [name for name, _ in asset_graph_order()
                    if name not in REGISTRY_ONLY and STAGES[name].paths(layout, params)]
    assert stage_names_in(repo_root / "dvc.yaml") == writes_files
    assert "train_source" not in writes_files  # the embedded corpus: the source assets write nothing
