"""Machine-wide slots: one training step at a time across every run on this machine, held through an exclusive
`flock` on `<root>/.locks/<name>.lock`.

This replaces Dagster's concurrency pool (`pool="training"`) wherever the steps of all runs share one machine
(the laptop, the docker compose GPU box), because in Dagster 1.13.27 that pool fails the two ways that matter:

- A run killed with SIGKILL keeps its slot for ever. Dagster frees a dead run's slots only from the daemon's run
  monitoring (`free_slots_after_run_end_seconds`), only once the run is marked finished, and nothing marks a
  SIGKILLed run finished under the default run launcher or a plain `dagster job execute` (no daemon at all).
- A run waiting for the slot spins a full core: `InstanceConcurrencyContext.interval_to_next_pending_claim_check`
  returns `min([0, ...])`, so `ActiveExecution.sleep_til_ready` never sleeps; on two cores the holder's training
  went from ~0.2 s to ~11 s a step.

The kernel drops a `flock` when the last descriptor of its holder closes, which a process's death does however it
dies, and a waiter sleeps in the kernel (0 % CPU) until then. The lock file says who holds it (run id, pid), so a
waiter can name the run it waits for. A lock file serialises the processes of one kernel only: on Kubernetes,
where every step is its own pod, Dagster's pool keeps the slot (dagster_project/defs/deployment.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCKS_DIR = ".locks"
TRAINING = "training"


def slot_path(root: Path, name: str = TRAINING) -> Path:
    """The lock file of slot `name` in the pipeline root (git-ignored; never delete it while a run is active)."""
    return root / LOCKS_DIR / f"{name}.lock"


def _holder(fd: int) -> str:
    """Who the lock file says holds the slot; 'an unknown run' in the instant between a holder's lock and its write."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    if "run" not in info:
        return "an unknown run"
    return f"run {info['run']} (pid {info['pid']})"


@contextmanager
def hold_slot(path: Path, run_id: str, log: Callable[[str], None]) -> Iterator[float]:
    """Hold the slot whose lock file is `path` for the block, waiting in the kernel while another process holds it;
    yields the seconds waited. `log` gets one line when it has to wait (naming the holder) and one when it got it."""
    name = path.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    # no O_TRUNC: the holder's record must survive a waiter's open; Python's descriptors are close-on-exec, so a
    # subprocess (torchrun, dvc) never inherits the lock and a dead holder's children cannot keep it
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = 0.0
        except BlockingIOError:
            log(f"waiting for the {name} slot held by {_holder(fd)}; lock file {path}")
            fcntl.flock(fd, fcntl.LOCK_EX)  # sleeps until the holder releases it or dies; a signal still interrupts
            waited = time.monotonic() - started
            log(f"took the {name} slot after waiting {waited:.1f}s")
        record = {"run": run_id, "pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)  # a released slot names nobody (a killed holder's record stays, but it is unlocked)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
