"""The training slot itself (dagster_project/core/slots.py), with real processes: a holder killed with SIGKILL frees it
at once, a waiter sleeps without using the CPU, names the holder and says how long it waited.

    .venv/bin/python -m pytest -q tests/faults/test_training_slot.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from faults.harness import cpu_seconds

from dagster_project.core.slots import hold_slot, slot_path

# a process that takes the slot as run `sys.argv[2]`, says so, and holds it until killed (or, waiting, until free)
HOLDER = """
import sys, time
from pathlib import Path
from dagster_project.core.slots import hold_slot
with hold_slot(Path(sys.argv[1]), sys.argv[2], lambda line: print(line, flush=True)) as waited:
    print(f"holding after {waited:.2f}s", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def start_holder(lock: Path, run_id: str, hold_seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), run_id, str(hold_seconds)],
                            stdout=subprocess.PIPE, text=True)


def test_a_holder_killed_with_sigkill_frees_the_slot_at_once(tmp_path: Path) -> None:
    lock = slot_path(tmp_path)
    holder = start_holder(lock, "run-dead", 600)
    assert holder.stdout.readline().startswith("holding after 0.00s")
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=30) == -signal.SIGKILL
    assert '"run-dead"' in lock.read_text()  # the dead holder's record is still there, its lock is not

    lines: list[str] = []
    started = time.monotonic()
    with hold_slot(lock, "run-next", lines.append) as waited:
        assert waited == 0.0 and '"run-next"' in lock.read_text()
    assert time.monotonic() - started < 1 and lines == []  # never waited, so never said so
    assert lock.read_text() == ""  # released: the file names nobody


def test_a_waiter_sleeps_in_the_kernel_names_the_holder_and_reports_its_wait(tmp_path: Path) -> None:
    lock = slot_path(tmp_path)
    with hold_slot(lock, "run-holder", print):
        waiter = start_holder(lock, "run-waiter", 0)
        assert waiter.stdout.readline().strip() == (
            f"waiting for the training slot held by run run-holder (pid {os.getpid()}); lock file {lock}")
        used_before = cpu_seconds(waiter.pid)
        time.sleep(2)
        used = cpu_seconds(waiter.pid) - used_before
        assert waiter.poll() is None  # still waiting: the slot is ours
    # two seconds of waiting cost at most a scheduler tick or two, not a spinning core (~2 s)
    assert used <= 0.03, f"the waiter used {used:.2f}s of CPU in 2s of waiting"
    took = waiter.stdout.readline().strip()
    assert took.startswith("took the training slot after waiting ") and float(took.split()[-1].rstrip("s")) >= 2
    assert waiter.stdout.readline().startswith("holding after ")
    assert waiter.wait(timeout=30) == 0


# a step with a retry policy that queues on the training slot, as unlearned_adapter does
QUEUED_STEP = """
import sys
from pathlib import Path
import dagster as dg
from dagster_project.defs.resources import stage_slot

@dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=1))
def queued(context: dg.AssetExecutionContext) -> None:
    with stage_slot(context, Path(sys.argv[1]), "training"):
        pass

result = dg.materialize([queued], raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
(failure,) = result.get_step_failure_events()
retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
print(f"success={result.success} retries={len(retries)} {failure.step_failure_data.user_failure_data.description}")
"""


def test_an_interrupt_while_queued_stops_the_run_instead_of_retrying_into_the_queue(tmp_path: Path) -> None:
    """Dagster retries an interrupted step that has a retry policy; one waiting for the slot would only queue again."""
    with hold_slot(slot_path(tmp_path), "run-holder", print):
        step = subprocess.Popen([sys.executable, "-c", QUEUED_STEP, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for line in step.stderr:  # Dagster's console log
            if "waiting for the training slot held by run run-holder" in line:
                break
        step.send_signal(signal.SIGINT)
        out, _ = step.communicate(timeout=60)
    assert out.strip() == ("success=False retries=0 interrupted while waiting for the training slot, before "
                           "training: run the request again to queue anew")
