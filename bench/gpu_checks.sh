#!/usr/bin/env bash
# Issue 9's GPU checks and measurements in one call, for a session lent a GPU machine (about 15 minutes of
# device time, start-up included): correctness first, then the throughput/MFU and memory figures.
#
#   bash bench/gpu_checks.sh        # results under $OUT when the device tool sets it, else .gpu-out/
#
# It uses the machine's own python3 (torch, transformers, peft and accelerate are installed there; nothing is
# installed or downloaded), imports this checkout through PYTHONPATH, and gives each step its own time limit
# so one slow step cannot eat the rest. BENCHMARKS.md comes back with the new sections: copy it over the
# repo's after reading it.
set -uo pipefail
out=${OUT:-.gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=${PYTHON:-python3}
status=0
step() {  # step <seconds> <log name> <command...>: run, keep its log, remember a failure, go on
  local limit=$1 log=$2
  shift 2
  echo "== $* (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | grep -v -e "Loading weights" -e "Writing model shards" | tee "$out/$log.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== failed with exit code $rc: $*"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/machine.log"
$py -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/machine.log"

# correctness of the CUDA paths: bf16 LoRA base / float32 full weights, padding-free on every kernel, save/load
step 150 checks $py bench/gpu_checks.py --config 135m
# the targets: >= 1.3x the naive loop, >= 45 % MFU for the 1B full fine-tune
step 150 throughput-1b $py bench/train_throughput.py --config 1b --batch-size 16 --answer-words 200
step 90 throughput-1b-packed $py bench/train_throughput.py --config 1b --batch-size 16 --answer-words 200 \
  --padding-free --attention flex_attention --buckets 1 --no-naive
# an 8B LoRA NPO step in <= 40 GB
step 200 memory-8b $py bench/train_throughput.py --config 8b --modes lora --methods npo --no-naive \
  --batch-size 16 --answer-words 200 --checkpointing
cp BENCHMARKS.md "$out/"
exit $status
