#!/usr/bin/env bash
# One prepared GPU check (run on the device machine): the CUDA tests, then short default-corpus training runs
# whose steady-state log lines give tokens/s and MFU. Prints a short table at the end.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee "$OUT/torch.txt"
python -m pytest -q -m gpu tests 2>&1 | tail -3 | tee "$OUT/pytest_gpu.txt"
run() {  # name, then gpt.py arguments
  local name=$1; shift
  local t0=$(date +%s)
  timeout 200 python gpt.py --train --out "$OUT/$name" --max-new-tokens 30 "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - t0 ))s" >> "$OUT/$name.log"
}
run small_compile --size small --steps 300 --compile
run base_compile --size base --steps 300 --compile
run base_eager --size base --steps 200
echo; echo "== summary (last log line of each run: steady state) =="
for f in "$OUT"/*.log; do
  echo "$(basename "$f" .log): $(grep -E '^ +[0-9]+ \| loss' "$f" | tail -1)"
  grep -E '^rc=' "$f"
done
