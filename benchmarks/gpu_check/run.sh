#!/usr/bin/env bash
# pmd's GPU check: ONE device call of at most 8 minutes (benchmarks/gpu_check/README.md).
#   device tool:  run  command="bash benchmarks/gpu_check/run.sh"  carry=[".gpucheck"]  timeout_s=540
# Runs in priority order against a budget (CHECK_BUDGET_S, default 420 s): a run that would not fit is recorded as
# skipped. Everything lands in $OUT as it happens (events.jsonl, log.txt, each run's metrics and summary), so a run
# stopped at the limit still brings back what it measured; summary.md is written last.
# CHECK_SMOKE=1: the same script on this CPU with a tiny model (tests/test_gpu_check.py keeps it from rotting).
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/benchmarks/gpu_check
CARRY=$REPO/.gpucheck
OUT=${OUT:-/tmp/gpu_check/out}
W=${CHECK_WORK:-/tmp/gpu_check}
BUDGET=${CHECK_BUDGET_S:-420}
SMOKE=${CHECK_SMOKE:-0}
mkdir -p "$OUT/runs" "$W/models"
export CHECK_EVENTS=$OUT/events.jsonl
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  MPLBACKEND=Agg PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PMD_CACHE=$W/cache

PY=python3
if [ "$SMOKE" = 1 ]; then
  PY=${CHECK_PYTHON:-$REPO/.venv/bin/python}
  MODELS="tiny"; BIG=tiny; SMALL=tiny
else
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== carried wheels -> /tmp/site"
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$REPO/src
  MODELS="0.5b 1.5b"; BIG=1.5b; SMALL=0.5b
fi
$PY -c "import torch, transformers, trl, accelerate, peft, pmd, json; print(json.dumps({'event': 'versions', \
'torch': torch.__version__, 'cuda': torch.version.cuda, 'transformers': transformers.__version__, \
'trl': trl.__version__, 'accelerate': accelerate.__version__, 'peft': peft.__version__}))" | tee -a "$CHECK_EVENTS" \
  || exit 4
TOKENIZER=$CARRY/tokenizer
[ -d "$TOKENIZER" ] || { TOKENIZER=$W/tokenizer; $PY "$HERE/tokenizer.py" "$TOKENIZER" || exit 5; }
$PY "$HERE/models.py" "$TOKENIZER" "$W/models" $MODELS | tee -a "$CHECK_EVENTS" || exit 5

# run LABEL NEED_S [--fsdp] ARGS...: one `pmd train` through the probe, skipped unless NEED_S seconds are left
run() {
  local label=$1 need=$2; shift 2
  local launch=($PY)
  if [ "${1:-}" = "--fsdp" ]; then
    shift; launch=($PY -m accelerate.commands.launch --config_file "$REPO/configs/accelerate/fsdp.yaml" --num_processes 1)
  fi
  if [ "$(left)" -lt "$need" ]; then
    echo "{\"label\": \"$label\", \"event\": \"skipped\", \"left_s\": $(left)}" | tee -a "$CHECK_EVENTS"; return
  fi
  echo "== $label (left $(left)s)"
  CHECK_LABEL=$label timeout $(( $(left) + 20 )) "${launch[@]}" "$HERE/probe.py" train "$HERE/check.yaml" \
    --run-dir "$W/runs/$label" "$@" > "$OUT/runs/$label.log" 2>&1
  local rc=$?
  grep -v "Warning\|warnings.warn" "$OUT/runs/$label.log" | tail -n 15
  mkdir -p "$OUT/runs/$label"
  for f in metrics.jsonl summary.json config.yaml; do cp "$W/runs/$label/$f" "$OUT/runs/$label/" 2>/dev/null; done
  ls "$W/runs/$label/checkpoints"/*/ "$W/runs/$label/final" > "$OUT/runs/$label/files.txt" 2>/dev/null
  echo "{\"label\": \"$label\", \"event\": \"rc\", \"rc\": $rc}" | tee -a "$CHECK_EVENTS"
}

M="--set model.name_or_path=$W/models/$SMALL"
[ "$SMOKE" = 1 ] && M="$M --set train.steps=2 --set train.max_completion_length=8 --set train.prompts_per_step=2 \
  --set train.num_generations=2 --set env.train_size=2 --set env.eval_size=2"
# 1. the step ratio and the precision used: SDPO and PMD, default precision (fp32 master + bf16 autocast), lr 1e-6,
#    a checkpoint with the EMA teacher at the last step
run sdpo $((SMOKE ? 5 : 80)) --no-eval $M --set train.algo=sdpo
run pmd $((SMOKE ? 5 : 80)) --no-eval $M --set train.save_steps=4 --set train.save_optimizer=false
# 2. pure bf16, asked for explicitly: do the weights still move at lr 1e-6? (the reason it is not the default)
run pmd-pure-bf16 $((SMOKE ? 5 : 50)) --no-eval $M --set model.dtype=bfloat16 --set train.steps=2
# 3. FSDP2 on one process (configs/accelerate/fsdp.yaml): TRL's FSDP teacher, pmd's EMA on DTensor shards, the
#    teacher's checkpoint through the full state dict, the final save
[ "$SMOKE" = 1 ] || run pmd-fsdp2 70 --fsdp --no-eval $M --set train.steps=2 --set train.save_steps=2 \
  --set train.save_optimizer=false
# 4. LoRA: final/ merged from a whole base copy, final/adapter/
run pmd-lora $((SMOKE ? 5 : 50)) --no-eval $M --set train.steps=2 --set train.lora_r=16 --set train.learning_rate=1e-4
# 5. 1.5B with policy-written reflection and the memory-free evaluation before and after
run pmd-1.5b $((SMOKE ? 5 : 100)) --set model.name_or_path=$W/models/$BIG --set train.steps=3 \
  --set memory.reflector=policy --set memory.reflection_max_tokens=32 $([ "$SMOKE" = 1 ] && echo "$M")

echo "== summary (left $(left)s)"
$PY "$HERE/summarize.py" "$OUT"
