"""Two requests at once: they queue on the training slot, asleep, and together take no longer than one after the
other. Before the slot was a lock file, the run waiting for Dagster's pool spun a core and slowed the holder's
training ~50x on two cores.

Both orders run the same work from the same fresh root (two copies of it), timed here on this machine: the same
two `dagster job execute` commands one after the other, then at once.

    .venv/bin/python -m pytest -q tests/faults/test_two_runs_at_once.py
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_REQUEST
from faults.harness import Run, materialization, sync_requests

from dagster_project.core.layout import Layout
from dagster_project.core.stages import run_stage
from dagster_project.core.tracking.mlflow_registry import registry_status

REQUESTS = ("micro", "other")
SLOWER_AT_MOST = 1.3  # at once / one after the other


def prepare(root: Path) -> None:
    """A second request on another split; unlearning long enough (seconds) for a spinning waiter to show; and the
    shared models built, so both orders find the target model trained (the runs still rebuild corpus and tokenizer)."""
    text = MICRO_REQUEST.replace("id: micro", "id: other").replace("split: forget10", "split: forget05")
    (root / "data" / "requests" / "other.yaml").write_text(text)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["unlearn"]["graddiff"]["steps"] = 200
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    layout = Layout.from_params(root, params)
    for stage in ("tofu_like_corpus", "tokenizer", "target_model"):
        run_stage(stage, layout, params)


def check_one_version_each(root: Path, home: Path, runs: list[Run]) -> None:
    for run in runs:
        assert run.finish() == 0, run.tail()
        assert materialization(home, run.run_id, "registered_model")
    (model,) = registry_status(root)["models"]
    assert sorted(v["request_id"] for v in model["versions"]) == sorted(REQUESTS)


@pytest.mark.e2e
def test_two_runs_at_once_take_no_longer_than_one_after_the_other(micro_root: Path, dagster_home: Path,
                                                                  one_thread) -> None:
    prepare(micro_root)
    at_once_root = micro_root.with_name("root-at-once")
    shutil.copytree(micro_root, at_once_root)  # before any run: the same work for both orders

    sync_requests(micro_root)
    started = time.monotonic()
    one_after_the_other = []
    for request in REQUESTS:
        one_after_the_other.append(Run(micro_root, dagster_home, request))
        assert one_after_the_other[-1].finish() == 0, one_after_the_other[-1].tail()
    serial = time.monotonic() - started

    sync_requests(at_once_root)
    started = time.monotonic()
    at_once = [Run(at_once_root, dagster_home, request) for request in REQUESTS]
    for run in at_once:
        run.finish()
    parallel = time.monotonic() - started

    check_one_version_each(micro_root, dagster_home, one_after_the_other)
    check_one_version_each(at_once_root, dagster_home, at_once)
    waits = [materialization(dagster_home, run.run_id, "unlearned_adapter")["slot_wait_seconds"] for run in at_once]
    print(f"two runs one after the other {serial:.1f}s, at once {parallel:.1f}s ({parallel / serial:.2f}x); "
          f"the runs at once waited {waits} s for the training slot")
    assert parallel <= SLOWER_AT_MOST * serial, (serial, parallel, waits)
    # they met at the slot: one trained at once, the other queued behind it, named it, and slept meanwhile
    (holder, waiter), (_, wait) = zip(*sorted(zip(at_once, waits), key=lambda pair: pair[1]))
    assert wait > 0 and waits.count(0) == 1, "the runs never met at the training slot: unlearn for longer"
    assert waiter.logged(f"waiting for the training slot held by run {holder.run_id} (pid {holder.process.pid})")
    assert waiter.cpu_while_waiting <= 0.05 + 0.05 * wait, f"{waiter.cpu_while_waiting:.2f}s of CPU in {wait}s waiting"
