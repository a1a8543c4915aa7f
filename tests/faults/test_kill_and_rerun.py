"""SIGKILL of a `dagster job execute` run at each long stage, then the same command again, as an operator would.

One request, five runs in a row: four are killed (training the target model, training the retain model, unlearning
after its first checkpoint, evaluating), the fifth finishes. Each killed run is checked from the instance's event log
to have died inside its stage, and is still STARTED there (no daemon marks it failed: nothing may depend on that).
The run killed while unlearning held the training slot; the run after it must take the slot without waiting.

    .venv/bin/python -m pytest -q tests/faults/test_kill_and_rerun.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from faults.harness import Run, cpu_seconds, materialization, run_status, step_events, step_started, sync_requests

from dagster_project.core.layout import Layout, load_params
from dagster_project.core.slots import hold_slot, slot_path
from dagster_project.core.tracking.dvc import status
from dagster_project.core.tracking.mlflow_registry import registry_status, resolve_version

UNLEARN_STEPS = 200  # at the micro scale: seconds of unlearning, so a kill after the first checkpoint lands mid-way


def lengthen_training(root: Path) -> None:
    """Micro stages take a fraction of a second; a few more epochs and steps give each kill a stage to land in."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(epochs=3, schedule_epochs=3)
    params["unlearn"]["graddiff"]["steps"] = UNLEARN_STEPS
    params["checkpoint"] = {"every_steps": 25}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def killed_inside(home: Path, run: Run, step: str) -> None:
    """`run` died inside `step` (started, never finished), and the instance still thinks it runs."""
    events = step_events(home, run.run_id)
    assert "STEP_START" in events[step] and "STEP_SUCCESS" not in events[step], (step, events[step])
    assert run_status(home, run.run_id) == "STARTED"


@pytest.mark.e2e
def test_a_run_killed_at_each_long_stage_reruns_to_one_version_and_a_dead_holder_blocks_nothing(
        micro_root: Path, dagster_home: Path) -> None:
    lengthen_training(micro_root)
    sync_requests(micro_root)
    checkpoint = Layout.from_params(micro_root, load_params(micro_root)).cache_dir / "checkpoints" / "micro.pt"

    for step, bar in (("target_model", "train target:"), ("retain_model", "train retain:")):
        run = Run(micro_root, dagster_home, "micro")
        run.wait_for(lambda line: bar in line)  # tqdm's first bar: the training loop has begun
        run.kill()
        killed_inside(dagster_home, run, step)

    # unlearning: this test holds the slot first, so the run queues on it (asleep), then trains until a checkpoint
    with hold_slot(slot_path(micro_root), "fault-suite", print):
        run = Run(micro_root, dagster_home, "micro")
        run.wait_for(lambda line: "waiting for the training slot held by run fault-suite" in line)
        used = cpu_seconds(run.process.pid)
        time.sleep(1)
        used = cpu_seconds(run.process.pid) - used
    assert used <= 0.05, f"a run waiting for the training slot used {used:.2f}s of CPU in 1s"
    run.wait_for(lambda line: "unlearn graddiff/lora:" in line)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.kill()
    killed_inside(dagster_home, run, "unlearned_adapter")
    saved_at = torch.load(checkpoint, weights_only=True)["steps_done"]
    assert 0 < saved_at < UNLEARN_STEPS

    # evaluation; first the unlearning again, which the dead run held the slot for: taken at once, resumed
    run = Run(micro_root, dagster_home, "micro")
    run.wait_for(step_started("evaluation"))
    run.kill()
    killed_inside(dagster_home, run, "evaluation")
    unlearned = materialization(dagster_home, run.run_id, "unlearned_adapter")
    assert unlearned["slot_wait_seconds"] == 0 and not run.logged("waiting for the training slot")
    assert unlearned["resumed_from_step"] == saved_at and unlearned["steps_done"] == UNLEARN_STEPS

    final = Run(micro_root, dagster_home, "micro")
    assert final.finish(timeout=240) == 0, final.tail()
    assert final.seconds < 120, f"the run after four kills took {final.seconds:.0f}s"
    for model in ("target_model", "retain_model"):  # finished before the kills: read back, not retrained
        assert materialization(dagster_home, final.run_id, model)["cached"] is True, model
    assert not checkpoint.exists()  # deleted once the unlearning finished

    (model,) = registry_status(micro_root)["models"]
    assert [v["version"] for v in model["versions"]] == ["1"] and model["aliases"] == {"candidate": "1"}
    assert resolve_version(micro_root, "models:/micro-model@candidate").version == "1"  # complete, not half-done
    assert status(micro_root) == {}  # dvc.lock agrees with the workspace
