#!/bin/bash
# One device call measuring the 8B lowmem memory levers through the training entrypoint, with the
# seed recipe measured in the same call (docs/benchmarks.md, "Eager release, host embedding, compact
# GQA saves"). Run on the GPU machine from a copy of the repository that holds the wheels in .whl/:
#   bash bench/train_gpu_levers_call.sh NAME        (results under $OUT/NAME-*)
# About 9.5 minutes on one H200: the exactness check, then 9 entrypoint runs of 8 steps (the
# least needed last: a run the timeout cuts is lost, the ones before it are saved).
set -u
cd "$(dirname "$0")/.."
name=${1:-levers}
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
  HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u
timeout 90 python3 bench/train_gpu_levers_check.py --out "$out/$name-levers-check.json"
L=llama3-8b-lowmem
ALL=offload_eager_release=true,embedding_on_host=true,compact_gqa_saves=true
timeout "${SMOKE_TIMEOUT:-470}" python3 bench/train_gpu_smoke.py --out "$out/$name-entrypoint-8b.json" --steps 8 \
  --skip-tiny-runs --configs llama3-8b $L "$L:$ALL" "$L:$ALL#2" "$L:offload_eager_release=true,compact_gqa_saves=true" \
  "$L:$ALL,max_tokens_per_batch=8192,checkpoint_layers=0,offload_layers=6" "llama3-8b#2" \
  "$L:offload_eager_release=true" \
  "$L:$ALL,max_tokens_per_batch=8192,checkpoint_layers=0,offload_layers=0,memory_budget_gib=130" \
  > "$out/$name-smoke.log" 2>&1
echo "smoke rc $?"; date -u
python3 - "$out/$name-entrypoint-8b.json" <<'PY'
import json, sys
for key, run in json.load(open(sys.argv[1])).items():
    if isinstance(run, dict) and ("steady_tokens_per_second" in run or "error" in run):
        choice = run.get("profile_choice") or {}
        print(key[:100], run.get("error", ""), run.get("steady_tokens_per_second"), run.get("peak_memory_gib"),
              run.get("predicted_peak_gib"), choice.get("micro_batch_tokens"), choice.get("recomputed_layers"),
              choice.get("offloaded_layers"), run.get("loss_first"), run.get("loss_last"))
PY
