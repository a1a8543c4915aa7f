"""Data-parallel unlearning: the same `run_unlearning` on N processes, one per GPU (or CPU processes on gloo).

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m dagster_project.core.methods.distributed job.json

`run_distributed` writes the job file and runs that command; the unlearned_adapter stage calls it when params
`runner.processes` > 1. `torch.distributed.run` (torchrun) starts the processes; accelerate's `PartialState`
joins them into a process group (NCCL on GPUs, each process on its own device; gloo on CPUs); every process
draws the same global batch and trains on its share, gradients are averaged each step (runner.average_gradients)
and process 0 saves the result, which it also writes as JSON for the caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dagster_project.core.data.io import read_json, read_jsonl, write_json, write_jsonl


def run_distributed(processes: int, model_dir: Path, tokenizer_dir: Path, forget_records: list[dict],
                    retain_records: list[dict], method_name: str, mode: str, hyperparameters: dict, out_dir: Path,
                    method_data: dict | None = None, mask_file: Path | None = None,
                    lora_targets: list[str] | None = None, options: dict | None = None) -> dict[str, Any]:
    """`run_unlearning` on `processes` processes; returns process 0's result. Arguments as for run_unlearning,
    except the tokenizer and a mask are passed as files (a saved tokenizer folder, a WAGLE mask file)."""
    with tempfile.TemporaryDirectory(prefix="unlearn-ddp-") as tmp:
        job = Path(tmp)
        write_jsonl(job / "forget.jsonl", forget_records)
        write_jsonl(job / "retain.jsonl", retain_records)
        write_json(job / "job.json", {
            "model_dir": str(model_dir), "tokenizer_dir": str(tokenizer_dir), "method_name": method_name, "mode": mode,
            "hyperparameters": hyperparameters, "out_dir": str(out_dir), "method_data": method_data,
            "mask_file": str(mask_file) if mask_file else None, "lora_targets": lora_targets,
            "options": {**(options or {}), "processes": processes}, "result": str(job / "result.json")})
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "dagster_project.core.methods.distributed", str(job / "job.json")]
        completed = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        if completed.returncode != 0:
            raise RuntimeError(f"distributed unlearning on {processes} processes failed (exit {completed.returncode}); "
                               f"the processes' errors are above")
        return read_json(job / "result.json")


def main(job_file: str) -> None:
    """One process of a distributed run (started by torchrun; see the module docstring)."""
    from accelerate import PartialState

    from dagster_project.core.attribution import load_mask
    from dagster_project.core.methods.runner import RunnerOptions, run_unlearning
    from dagster_project.core.model.tiny_llama import load_tokenizer

    job = json.loads(Path(job_file).read_text())
    state = PartialState()  # joins the torchrun processes: init_process_group, device per process
    directory = Path(job_file).parent
    result = run_unlearning(
        Path(job["model_dir"]), load_tokenizer(Path(job["tokenizer_dir"])), read_jsonl(directory / "forget.jsonl"),
        read_jsonl(directory / "retain.jsonl"), job["method_name"], job["mode"], job["hyperparameters"],
        Path(job["out_dir"]), method_data=job["method_data"],
        mask=load_mask(Path(job["mask_file"])) if job["mask_file"] else None, lora_targets=job["lora_targets"],
        options=RunnerOptions(**job["options"]))
    if state.is_main_process:
        write_json(Path(job["result"]), result)
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
