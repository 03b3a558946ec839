#!/usr/bin/env bash
# One prepared GPU check (run on the device machine): the CUDA tests, then short default-corpus training runs
# of each script named (default: gpt), whose last log line (steady state) gives tokens/s and MFU.
# Usage: bash benchmarks/gpu_check.sh [gpt] [bert] [base] [electra] [bench]; prints a short table at the end.
# bench: bench.py at base size, sequence 512, bf16 + compile, every model against Hugging Face (the issue's targets).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee "$OUT/torch.txt"
python -m pytest -q -m gpu tests 2>&1 | tail -3 | tee "$OUT/pytest_gpu.txt"
run() {  # name, script, then its arguments
  local name=$1 script=$2; shift 2
  local t0=$(date +%s)
  timeout 200 python "$script" --train --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - t0 ))s" >> "$OUT/$name.log"
}
for paper in "${@:-gpt}"; do
  case $paper in
    gpt) run gpt_small_compile gpt.py --size small --steps 300 --compile --max-new-tokens 30
         run gpt_base_compile gpt.py --size base --steps 300 --compile --max-new-tokens 30
         run gpt_base_eager gpt.py --size base --steps 200 --max-new-tokens 30 ;;
    bert) run bert_small_compile bert.py --size small --steps 300 --compile
          run bert_base_compile bert.py --size base --steps 300 --compile ;;
    base) run gpt_base_compile gpt.py --size base --steps 300 --compile --max-new-tokens 30
          run bert_base_compile bert.py --size base --steps 300 --compile ;;
    electra) run electra_small_compile electra.py --size small --steps 2000 --compile ;;
    bench) timeout 400 python bench.py --device cuda --size base --seq-len 512 --batch-size 32 --compile \
             --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "rc=$?" >> "$OUT/bench.log"; cat "$OUT/bench.log" ;;
  esac
done
echo; echo "== summary (last log line of each run: steady state) =="
for f in "$OUT"/*_*.log; do
  echo "$(basename "$f" .log): $(grep -E '^ +[0-9]+ \| loss' "$f" | tail -1)"
  grep -E '^rc=' "$f"
done
