#!/usr/bin/env bash
# The GPU check, planned to fit its window (benchmarks/gpu_plan.py prints the plan first; docs/gpus.md):
#   bash benchmarks/gpu_check.sh [SCRIPT ...]       the first slot: the fp16 CUDA test while each script's data is
#                                                   prepared, then each trained at base with --compile, 200 steps,
#                                                   the never-run scripts first (roberta albert electra gpt bert)
#   bash benchmarks/gpu_check.sh electra            a rerun of one script on the warm machine: its prepared data in
#                                                   $RUNS is kept, the other scripts' logs too (one table of all)
#   GPU_CHECK_STAGES=bench bash benchmarks/gpu_check.sh      a second slot: bench.py, ours against Hugging Face
#   GPU_CHECK_STAGES=compare bash benchmarks/gpu_check.sh    a second slot: compare.py --size small --budget 1.5e16
#   GPU_CHECK_DRY=1 ...        print the plan for one H100 and stop (no GPU needed)
#   GPU_CHECK_SMOKE=1 ...      the same stages on the CPU at the tiny size, a few steps
#   GPU_CHECK_SMOKE=base ...   the same stages on the CPU at base shapes: 2 steps of one sequence, compiled, and an
#                              evaluation of 2 sequences, so that shape, memory-plan and compile errors show up here
# Everything comes back in $OUT (default /tmp/gpu_check): plan.txt, meta.txt, table.md, logs/ (each stage's log and
# each run's metrics.jsonl), bench-MODELS.json and profile-bench-MODELS.txt (one each a bench slot). Run folders
# (prepared data, checkpoints) stay in $RUNS.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
RUNS=${RUNS:-/tmp/gpu_check_runs}
STAGE=${GPU_CHECK_STAGES:-train}
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
case $STAGE in train|bench|compare) ;; *) echo "error: GPU_CHECK_STAGES=$STAGE: train, bench or compare" >&2; exit 2;; esac
case ${GPU_CHECK_SMOKE:-} in "") smoke=();; 1) smoke=(--smoke tiny);; base) smoke=(--smoke base);;
  *) echo "error: GPU_CHECK_SMOKE=$GPU_CHECK_SMOKE: 1 or base" >&2; exit 2;; esac
mkdir -p "$OUT/logs" "$RUNS" || exit 2
rm -f "$OUT"/{plan.txt,plan.env,meta.txt}
[ "$STAGE" = compare ] || rm -f "$OUT/table.md"
"$PYTHON" benchmarks/gpu_plan.py "$STAGE" "$@" "${smoke[@]}" --env "$OUT/plan.env" | tee "$OUT/plan.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 2
[ -n "${GPU_CHECK_DRY:-}" ] && exit 0
source "$OUT/plan.env"
export PYTHONUNBUFFERED=1
START=$(date +%s)
DEADLINE=$(( START + ${GPU_CHECK_SECONDS:-$DEADLINE_S} ))
limit() {  # a stage's time limit: its own, or what is left before the deadline (less 10 s for the table)
  local left=$(( DEADLINE - $(date +%s) - 10 ))
  echo $(( $1 < left ? $1 : left ))
}

# what every stage needs, imported, in one line; and the device
need=(torch numpy tokenizers safetensors filelock)
[ "$STAGE" = train ] && [ -n "$PYTEST_ARGS" ] && need+=(pytest)
[ "$STAGE" != train ] && need+=(transformers)
"$PYTHON" -c '
import importlib, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        missing.append(f"{name} ({type(e).__name__})")
print(f"imports: {sys.executable}: " + ("missing " + ", ".join(missing) if missing else "all found"))
sys.exit(bool(missing))' "${need[@]}" | tee "$OUT/meta.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 2
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/meta.txt"
"$PYTHON" -c "import sys, torch; print('torch', torch.__version__, '· Python', sys.version.split()[0], end=' · ')" \
  >> "$OUT/meta.txt"
date +%F >> "$OUT/meta.txt"

if [ "$STAGE" = train ]; then
  # 1. each script's data, in parallel on the CPUs (kept from an earlier run); the CUDA test meanwhile
  for s in "${RUN[@]}"; do
    timeout -k 10 "$(limit 300)" "$PYTHON" "$s.py" --prepare-only --size "$SIZE" --out "$RUNS/$s" \
      > "$OUT/logs/$s.prepare.log" 2>&1 &
  done
  if [ -n "$PYTEST_ARGS" ]; then
    timeout -k 10 "$(limit 120)" "$PYTHON" -m pytest -q $PYTEST_ARGS tests > "$OUT/logs/pytest.log" 2>&1
    echo "pytest $PYTEST_ARGS: rc=$? $(tail -1 "$OUT/logs/pytest.log")" | tee -a "$OUT/meta.txt"
  fi
  wait
  # 2. the training runs, in the plan's order
  for s in "${RUN[@]}"; do
    batch=BATCH_$s seq=SEQ_$s own=LIMIT_$s log="$OUT/logs/$s.log"
    echo "micro-batch: ${!batch} × ${!seq}" > "$log"
    budget=$(limit "${!own}")
    if [ "$budget" -lt 20 ]; then
      echo "rc=skipped: the deadline" >> "$log"; continue
    fi
    rm -f "$RUNS/$s"/ckpt*.pt "$RUNS/$s/metrics.jsonl"  # a rerun trains anew on the prepared data
    extra=(--batch-size "${!batch}" --grad-accum 1 --steps "$STEPS" --log-interval "$INTERVAL" $TRAIN_ARGS)
    [ "$s" = gpt ] && extra+=(--max-new-tokens 2)
    t0=$(date +%s)
    timeout -k 10 "$budget" "$PYTHON" "$s.py" --train --size "$SIZE" --device "$DEVICE" --out "$RUNS/$s" \
      "${extra[@]}" >> "$log" 2>&1
    echo "rc=$? wall=$(( $(date +%s) - t0 ))s" >> "$log"
    cp "$RUNS/$s/metrics.jsonl" "$OUT/logs/$s.metrics.jsonl" 2> /dev/null
    echo "$s.py: $(grep -E '^ +[0-9]+ \|' "$log" | tail -1 | cut -c1-100) ($(tail -1 "$log"))"
  done
elif [ "$STAGE" = bench ]; then
  models=$(IFS=,; echo "${RUN[*]}") name=bench-$(IFS=-; echo "${RUN[*]}")  # one set of files a bench slot
  timeout -k 10 "$(limit "$LIMIT_S")" "$PYTHON" bench.py $BENCH_ARGS --models "$models" --json "$OUT/$name.json" \
    --profile "$OUT/profile-$name.txt" > "$OUT/logs/$name.log" 2>&1
  echo "rc=$?" >> "$OUT/logs/$name.log"
else
  timeout -k 10 "$(limit "$LIMIT_S")" "$PYTHON" compare.py $COMPARE_ARGS --out "$RUNS/compare" \
    > "$OUT/logs/compare.log" 2>&1
  echo "rc=$?" >> "$OUT/logs/compare.log"
  cp "$RUNS/compare"/*.md "$OUT/logs/" 2> /dev/null
  tail -25 "$OUT/logs/compare.log"
fi

echo "$(( $(date +%s) - START )) s in all (plan: $PLAN_S s for one H100)" >> "$OUT/meta.txt"
echo
[ "$STAGE" = compare ] || "$PYTHON" benchmarks/gpu_table.py "$OUT" "$RUNS"
