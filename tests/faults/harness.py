"""The fault suite's harness: real `dagster job execute` processes on a micro root, as an operator runs them.

Each run is a subprocess with the Makefile's environment (and one torch thread), its own DAGSTER_HOME (written with the Makefile's
dagster.yaml) and UNLEARN_ROOT at the micro root; its console log (Dagster's event log and the training bars) is
read line by line as it comes, so a test can act the moment a stage starts, and the run's events are read back
from the instance afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import REPO

DAGSTER = str(Path(sys.executable).with_name("dagster"))
# what the Makefile exports to every command (telemetry off, no hub access), and one torch thread per run: a 32-wide
# model gains nothing from intra-op threads, and on a shared 2-core machine their barriers wait for time slices
# (conftest's `one_thread`), which would time the neighbours' load rather than these runs
RUN_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TQDM_MININTERVAL": "5", "OMP_NUM_THREADS": "1"}
STARTED: list[Run] = []  # every run this session started: conftest kills what a failed test left running
RUN_ID = re.compile(r"unlearn_request - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - ")


def makefile_dagster_yaml() -> str:
    """The instance config `make install` writes to $DAGSTER_HOME/dagster.yaml (the Makefile's DAGSTER_YAML)."""
    makefile = (REPO / "Makefile").read_text()
    return re.search(r"^DAGSTER_YAML := '(.*)'$", makefile, re.M).group(1).replace("\\n", "\n")


def step_started(step: str) -> Callable[[str], bool]:
    return lambda line: f'STEP_START - Started execution of step "{step}"' in line


class Run:
    """One `dagster job execute` of the `unlearn_request` job for a partition, its console read as it comes."""

    def __init__(self, root: Path, home: Path, partition: str) -> None:
        env = {**os.environ, **RUN_ENV, "UNLEARN_ROOT": str(root), "DAGSTER_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [DAGSTER, "job", "execute", "-m", "dagster_project.definitions", "-j", "unlearn_request",
             "--tags", json.dumps({"dagster/partition": partition})],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)  # universal newlines: a tqdm bar's \r ends a line too
        self.lines: list[str] = []
        self.seconds: float | None = None
        self.cpu_while_waiting: float | None = None  # CPU seconds the run used while it waited for the training slot
        self._cpu_at_wait = 0.0
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        STARTED.append(self)

    def _read(self) -> None:
        for line in self.process.stdout:
            # the run is asleep on the slot between these two lines: what CPU it used then is what waiting costs
            if "waiting for the training slot" in line:
                self._cpu_at_wait = cpu_seconds(self.process.pid)
            elif "took the training slot" in line:
                self.cpu_while_waiting = cpu_seconds(self.process.pid) - self._cpu_at_wait
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for(self, matches: Callable[[str], bool], timeout: float = 180) -> str:
        """The first console line `matches` accepts, waiting for it; fails if the run ends or times out first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    if matches(line):
                        return line
                seen = len(self.lines)
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"run ended or timed out before the awaited line:\n{self.tail()}")
                self._new_line.wait(timeout=1)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no event; whatever the run held must be freed by the kernel."""
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL
        self._reader.join(timeout=30)

    def finish(self, timeout: float = 240) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.seconds = time.monotonic() - self.started
        self._reader.join(timeout=30)
        return code

    @property
    def run_id(self) -> str:
        return next(m.group(1) for line in self.lines if (m := RUN_ID.search(line)))

    def logged(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])


def sync_requests(root: Path) -> None:
    """`unlearn request sync`: a partition for every request file (in this process, on $DAGSTER_HOME's instance)."""
    from dagster_project.cli import main as cli_main

    assert cli_main(["--root", str(root), "request", "sync"]) == 0


def step_events(home: Path, run_id: str) -> dict[str, set[str]]:
    """Step key -> the step event types the instance recorded for run `run_id` (STEP_START, STEP_SUCCESS, ...)."""
    import dagster as dg

    events: dict[str, set[str]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.all_logs(run_id):
            if record.dagster_event is not None and record.dagster_event.step_key:
                events.setdefault(record.dagster_event.step_key, set()).add(record.dagster_event.event_type_value)
    return events


def materialization(home: Path, run_id: str, step: str) -> dict[str, Any]:
    """The metadata values of the asset materialisation step `step` of run `run_id` recorded."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        (event,) = [r.dagster_event for r in records if r.dagster_event.step_key == step]
    return {key: entry.value for key, entry in event.event_specific_data.materialization.metadata.items()}


def run_status(home: Path, run_id: str) -> str:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_run_by_id(run_id).status.value


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
