"""The compute environment of a registered version: record it, compare it, and pin a re-run to it.

Floating-point results depend on more than code and data: the instruction set ATen's vectorised kernels
dispatch to, bf16 autocast, the thread count. Measured on the demo: a rebuild under ATen's AVX2 kernels of a
version trained under AVX512 changed the target, retain and unlearned models' bytes (README, "Operating
it"). A version's manifest records `compute_environment()`; `audit verify` re-evaluates and `audit
reproduce` rebuilds in child processes pinned to the recorded instruction set, threads and (where it was
off) bf16 (`run_pinned`), and both report what still differs.

    python -m dagster_project.core.audit.compute '{"out": "result.json"}'   # what run_pinned starts
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def compute_environment() -> dict[str, Any]:
    """What decides the last bits of this machine's floating-point results, recorded so that an audit
    re-run elsewhere can tell a hardware difference from a code or data one (the real table re-run on
    another machine matched its target model but not its gradient-ascent runs: README).
    `cpu_bf16` is whether the CPU path trains under bf16 autocast (`native_cpu_bf16`). With a GPU (else
    None): its name, the CUDA and cuDNN versions torch was built with (cuDNN holds one of SDPA's attention
    kernels), whether float32 matrix products may run in TF32 (torch's float32 matmul precision: "highest"
    unless something in the process lowered it) and whether training runs with deterministic kernels (`training_device`)."""
    import torch

    from dagster_project.core.model.tiny_llama import cuda_deterministic, native_cpu_bf16

    gpu = torch.cuda.is_available()
    return {"cpu": cpu_model_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": native_cpu_bf16(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if gpu else None, "cuda": torch.version.cuda if gpu else None,
            "cudnn": torch.backends.cudnn.version() if gpu else None,
            "float32_matmul": torch.get_float32_matmul_precision() if gpu else None,
            "cuda_deterministic": cuda_deterministic() if gpu else None}


def cpu_model_name() -> str:
    """/proc/cpuinfo's model name on Linux (platform.processor() is empty there), else platform's answer."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def compute_differences(recorded: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """`key: recorded -> now` for each compute-environment field that differs (`recorded` None: a manifest
    written before the field existed)."""
    if recorded is None:
        return ["not recorded in this version's manifest"]
    return [f"{k}: {recorded.get(k)} -> {now[k]}" for k in sorted(now) if recorded.get(k) != now[k]]


def pinned_compute_variables(recorded: dict[str, Any] | None) -> dict[str, str]:
    """Environment variables that make torch in a child process compute like the version did, as far as
    software can, except those the user set already. ATEN_CPU_CAPABILITY: ATen's vectorised kernels can be
    told to use a lower instruction set than the CPU has (a higher one falls back to the CPU's), so an AVX2
    version reproduces on an AVX512 machine; an AVX2 rebuild of an AVX512 demo version changed every trained
    model's bytes (README). OMP_NUM_THREADS: the intra-op thread count changes how float sums round (torch
    caps it at this machine's cores, and the compute check then shows the difference). UNLEARN_CPU_BF16=0
    when the version trained in float32 for want of native bf16 (`native_cpu_bf16`); the reverse, bf16 on
    a CPU without it, cannot be pinned. UNLEARN_CUDA_DETERMINISTIC=1 and cuBLAS's fixed workspace when the
    version trained on CUDA with deterministic kernels (`training_device`): a GPU of another model or
    driver may still round differently, and the compute check names it."""
    if not recorded:
        return {}
    capability = {"NO AVX": "default", "Z VECTOR": "zvector"}.get(recorded["cpu_capability"],
                                                                 recorded["cpu_capability"].lower())
    pinned = {"ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": str(recorded["threads"]),
              **({} if recorded["cpu_bf16"] else {"UNLEARN_CPU_BF16": "0"}),
              **({"UNLEARN_CUDA_DETERMINISTIC": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
                 if recorded.get("cuda_deterministic") else {})}
    return {k: v for k, v in pinned.items() if k not in os.environ}


def run_pinned(recorded: dict[str, Any] | None, work: Path, evaluate: dict[str, Any] | None = None,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this module in a child process pinned to `recorded` (on top of `env`, default os.environ):
    {"compute": its compute environment} plus, with `evaluate` (root, request_file, params, model_dir),
    "metrics": `evaluate_for_request` on that store with a cold score cache."""
    out = work / "pinned-child.json"
    job = {"out": str(out), "evaluate": evaluate}
    # started beside this package so that `-m` imports the code running here, not a checkout in the cwd
    child = subprocess.run([sys.executable, "-m", __name__, json.dumps(job)], capture_output=True, text=True,
                           env={**(env if env is not None else os.environ), **pinned_compute_variables(recorded)},
                           cwd=Path(__file__).resolve().parents[3], check=False)
    if child.returncode != 0:
        raise RuntimeError(f"the pinned child process failed (exit {child.returncode}): "
                           + "\n".join(child.stderr.strip().splitlines()[-5:]))
    return json.loads(out.read_text())


def main() -> None:
    job = json.loads(sys.argv[1])
    result: dict[str, Any] = {"compute": compute_environment()}
    if job.get("evaluate"):
        from dagster_project.core.layout import Layout
        from dagster_project.core.stages import evaluate_for_request

        e = job["evaluate"]
        layout = Layout(root=Path(e["root"]), request_file=e["request_file"])
        result["metrics"] = evaluate_for_request(layout, e["params"], Path(e["model_dir"]), use_cache=False)
    Path(job["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
