#!/usr/bin/env bash
# Issue 9's GPU measurements and checks in one call, for a session lent a GPU machine (about 15 minutes of
# device time, start-up included, and at most 10 minutes a command): the figures first, then the
# correctness checks of the CUDA paths, then the packed flex-attention variant.
#
#   bash bench/gpu_checks.sh --wheels   # here, first: fetch the few packages the GPU image lacks into .whl/ (ignored)
#   bash bench/gpu_checks.sh            # on the GPU machine, with .whl carried; results under $OUT when the device
#                                       # tool sets it, else .gpu-out/
#   bash bench/gpu_checks.sh --smoke    # CPU rehearsal (CI runs it): the same steps and flags on the tiny config,
#                                       # few steps, NPO's checks only, sdpa for the packed step, BENCHMARKS.md left alone
#
# It uses the machine's own python3 (torch, transformers, peft and accelerate are installed there; nothing is
# downloaded there). The image lacks what the evaluation and the reveal import (rouge-score and its nltk,
# pydantic): `--wheels` fetches them here, for its CPython 3.12 (WHEELS_PYTHON to change it) at the versions of
# this checkout's .venv, and where .whl/ exists they are installed into a temporary folder on PYTHONPATH. It
# imports this checkout through PYTHONPATH, and gives each step its own time limit
# (together 570 s, under the 10-minute command limit) so one slow step cannot eat the rest. BENCHMARKS.md is copied to the results
# after every step, so a call cut short still brings back what was measured: copy it over the repo's after
# reading it.
set -uo pipefail
# not in the GPU image (KINDS.md's package list): rouge-score (the evaluation) with nltk (its stemmer), pydantic
# with its own needs (data/request.py, which the reveal imports), typing-extensions at the version pydantic needs
missing=(rouge-score nltk pydantic pydantic-core annotated-types typing-inspection typing-extensions)
if [ "${1:-}" = --wheels ]; then
  rm -rf .whl && mkdir -p .whl
  pins=$(.venv/bin/python -c "import sys; from importlib.metadata import version
print(' '.join(f'{name}=={version(name)}' for name in sys.argv[1:]))" "${missing[@]}") || exit
  for pin in $pins; do  # rouge-score is published as a source archive only: built here into a pure-Python wheel
    if [ "${pin%%==*}" = rouge-score ]; then
      .venv/bin/python -m pip wheel -q --no-deps -w .whl "$pin" || exit
    else
      .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEELS_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$pin" || exit
    fi
  done
  ls .whl && echo "carry .whl to the GPU machine: run(command='bash bench/gpu_checks.sh', carry=['.whl'])"
  exit 0
fi
out=${OUT:-.gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  if $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl; then
    PYTHONPATH=$site:$PYTHONPATH
  else  # e.g. fetched for the image's Python 3.12 and run here under another: this Python may have them already
    echo "== warning: .whl/ does not install for $py; going on without it"
  fi
fi
$py -c "import rouge_score, pydantic" 2>/dev/null || echo "== warning: rouge-score or pydantic missing: the evaluation and \
release checks will fail; run 'bash bench/gpu_checks.sh --wheels' on the CPU machine and carry .whl"
if [ "${1:-}" = --smoke ]; then
  small=tiny one_b=tiny eight_b=tiny packed_attention=sdpa
  shape="--batch-size 2 --answer-words 20 --steps 1 --warmup 1 --no-write" checks="--methods npo --steps 2"
else
  small=135m one_b=1b eight_b=8b packed_attention=flex_attention
  shape="--batch-size 16 --answer-words 200" checks="--steps 3"
fi
status=0
step() {  # step <seconds> <log name> <command...>: run, keep its log, remember a failure, go on
  local limit=$1 log=$2
  shift 2
  echo "== $* (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | grep -v -e "Loading weights" -e "Writing model shards" | tee "$out/$log.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== failed with exit code $rc: $*"; status=1; }
  cp BENCHMARKS.md "$out/"
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/machine.log"
fi
$py -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/machine.log"

# the targets: >= 1.3x the naive loop and >= 45 % MFU for the 1B full fine-tune; an 8B LoRA NPO step in <= 40 GB
step 150 throughput-1b $py bench/train_throughput.py --config $one_b $shape
step 175 memory-8b $py bench/train_throughput.py --config $eight_b --modes lora --methods npo --no-naive \
  --checkpointing $shape
# correctness of the CUDA paths: bf16 LoRA base / float32 full weights, padding-free on every kernel, save/load,
# evaluation and release on the GPU. cuBLAS's fixed workspace is read at the first matmul, before the strict
# determinism runs switch UNLEARN_CUDA_DETERMINISTIC on, so it is set from the start (as README tells users to)
CUBLAS_WORKSPACE_CONFIG=:4096:8 step 175 checks $py bench/gpu_checks.py --config $small $checks
step 70 throughput-1b-packed $py bench/train_throughput.py --config $one_b --padding-free \
  --attention $packed_attention --buckets 1 --no-naive $shape
exit $status
