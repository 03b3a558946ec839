#!/usr/bin/env bash
# The GPU check of the five scripts at base size, in one run of under ten minutes (on the device machine):
#   1. each script's data prepared (--prepare-only, in parallel on the CPUs) while `pytest -m gpu` runs;
#   2. a short `--train --size base --compile` of each script: 200 steps, of which the last 100 (steady state,
#      compilation excluded) give tokens/s, MFU and the host's data share (metrics.jsonl);
#   3. `bench.py --device cuda --size base --seq-len 512 --compile` for all five: ours against Hugging Face, each
#      of our models profiled for 3 more steps;
#   4. one table (benchmarks/gpu_table.py), then the profile of the script furthest below a target.
# Each stage gets what is left before the deadline (GPU_CHECK_SECONDS, default 540), in that order: a slow stage
# costs the later ones, never the table, and what did not fit is named under it.
# Usage: bash benchmarks/gpu_check.sh [SCRIPT ...]   (default: all five)
#        GPU_CHECK_STAGES="bench" bash benchmarks/gpu_check.sh roberta albert   (stages: pytest train bench)
# In $OUT (default /tmp/gpu_check): table.md, meta.txt, train.log (every run's log), bench.json,
# bench.log, profile.txt. GPU_CHECK_SMOKE=1: the same stages on the CPU at the tiny size, a few steps each.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
RUNS=${RUNS:-/tmp/gpu_check_runs}  # run folders and their logs: checkpoints stay on the machine
START=$(date +%s)
DEADLINE=$(( START + ${GPU_CHECK_SECONDS:-540} ))
if [ $# -gt 0 ]; then SCRIPTS=("$@"); else SCRIPTS=(gpt bert roberta albert electra); fi
STAGES=" ${GPU_CHECK_STAGES:-pytest train bench} "
for s in "${SCRIPTS[@]}"; do
  case $s in gpt|bert|roberta|albert|electra) ;; *) echo "error: unknown script $s" >&2; exit 2 ;; esac
done
export PYTHONUNBUFFERED=1
rm -rf "$RUNS" && mkdir -p "$OUT" "$RUNS" || exit 2
rm -f "$OUT"/{table.md,meta.txt,train.log,bench.json,bench.log,profile.txt}

PYTHON=${PYTHON:-python}  # the interpreter to run everything with (tests pass their own)
if [ -n "${GPU_CHECK_SMOKE:-}" ]; then
  DEVICE=cpu SIZE=tiny STEPS=4 BENCH=(--device cpu --size tiny --steps 2 --warmup 1)
  declare -A BATCH=([gpt]="8 × 128" [bert]="8 × 128" [roberta]="8 × 128" [albert]="8 × 128" [electra]="8 × 32")
else
  DEVICE=cuda SIZE=base STEPS=200 BENCH=(--device cuda --size base --seq-len 512 --batch-size 32 --compile
                                         --steps 10 --warmup 3)
  # each script's preset micro-batch and sequence, one micro-batch a step; ELECTRA's 256 sequences cut to 64
  declare -A BATCH=([gpt]="64 × 512" [bert]="256 × 128" [roberta]="32 × 512" [albert]="64 × 512"
                    [electra]="64 × 512")
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/meta.txt"
fi
"$PYTHON" -c "import sys, torch; print('torch', torch.__version__, '· Python', sys.version.split()[0], end=' · ')" \
  >> "$OUT/meta.txt"
date +%F >> "$OUT/meta.txt"

left() {  # seconds before the deadline, less a reserve for the table
  echo $(( DEADLINE - $(date +%s) - 10 ))
}

# 1. the data, in parallel on the CPUs; the CUDA tests meanwhile
for s in "${SCRIPTS[@]}"; do
  [[ $STAGES == *" train "* ]] && timeout "$(left)" "$PYTHON" "$s.py" --prepare-only --size "$SIZE" --out "$RUNS/$s" \
    > "$RUNS/$s.log" 2>&1 &
done
if [ "$DEVICE" = cuda ] && [[ $STAGES == *" pytest "* ]]; then
  budget=$(left)
  timeout "$(( budget < 150 ? budget : 150 ))" "$PYTHON" -m pytest -q -m gpu tests > "$RUNS/pytest.log" 2>&1
  echo "pytest -m gpu: rc=$? $(tail -1 "$RUNS/pytest.log")" | tee -a "$OUT/meta.txt"
fi
wait

# 2. the training runs
for s in "${SCRIPTS[@]}"; do
  [[ $STAGES == *" train "* ]] || break
  log="$RUNS/$s.log"
  budget=$(left)
  echo "micro-batch: ${BATCH[$s]}" >> "$log"
  if [ "$budget" -lt 30 ]; then
    echo "rc=skipped: the deadline" >> "$log"; continue
  fi
  read -r batch _ <<< "${BATCH[$s]}"
  extra=(--batch-size "$batch" --grad-accum 1 --steps "$STEPS")
  [ "$DEVICE" = cuda ] && extra+=(--compile)
  [ "$s" = gpt ] && extra+=(--max-new-tokens 2)
  t0=$(date +%s)
  timeout "$(( budget < 240 ? budget : 240 ))" "$PYTHON" "$s.py" --train --size "$SIZE" --device "$DEVICE" \
    --out "$RUNS/$s" "${extra[@]}" >> "$log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - t0 ))s" >> "$log"
  echo "$s.py: $(grep -E '^ +[0-9]+ \|' "$log" | tail -1 | cut -c1-100) ($(tail -1 "$log"))"
done

# 3. ours against Hugging Face, each of ours profiled
budget=$(left)
if [[ $STAGES != *" bench "* ]]; then
  echo "rc=not asked for" > "$OUT/bench.log"
elif [ "$budget" -ge 30 ]; then
  models=$(IFS=,; echo "${SCRIPTS[*]}")
  timeout "$budget" "$PYTHON" bench.py "${BENCH[@]}" --models "$models" --json "$OUT/bench.json" \
    --profile "$OUT/profile.txt" > "$OUT/bench.log" 2>&1
  echo "rc=$?" >> "$OUT/bench.log"
else
  echo "rc=skipped: the deadline" > "$OUT/bench.log"
fi

# 4. the logs in one file; the table
for s in "${SCRIPTS[@]}"; do echo "===== $s.py"; cat "$RUNS/$s.log" 2> /dev/null; done > "$OUT/train.log"
echo "$(( $(date +%s) - START )) s in all" >> "$OUT/meta.txt"
echo
"$PYTHON" benchmarks/gpu_table.py "$OUT" "$RUNS" "${SCRIPTS[@]}"
