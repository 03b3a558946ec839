"""Time each paper script's default `--train` whole, as a user runs it, and read what it learned.

    python benchmarks/default_runs.py                                # all five, --dtype auto, cold then warm
    python benchmarks/default_runs.py --scripts bert --dtypes fp32,bf16 --seeds 0,1 --no-warm

Each run is a fresh process (`python SCRIPT.py --train --out FOLDER --dtype D --seed S`), alone, timed from its
start to its exit. Cold: a new run folder (the tokenizer trained, the caches built). Warm: the same folder again
with its checkpoint and log removed, so the tokenizer and caches are reused (as after --prepare-only). Prints a
table (whole time, the phases the script prints, the final validation metrics) and writes it as JSON.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]
METRICS = re.compile(r"val_(loss|.*_acc|auc)")  # each paper's own: LM loss, MLM, NSP and SOP accuracy, AUC


def cpu():
    """The CPU the timings need: its model, and the kernels ATen picked on it (AVX512, or AVX2 where the CPU has no
    AVX-512 or ATEN_CPU_CAPABILITY=avx2 asks for them), which decide what `--dtype auto` is."""
    import platform

    import torch

    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    bf16 = "with" if torch.cpu._is_avx512_bf16_supported() else "without"
    return f"{model}, {bf16} AVX-512 BF16, ATen {torch.backends.cpu.get_cpu_capability()} kernels"


def run(script, folder, dtype, seed):
    argv = [sys.executable, f"{script}.py", "--train", "--out", str(folder), "--dtype", dtype, "--seed", str(seed)]
    start = time.time()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    whole = time.time() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} ended with status {done.returncode}: {done.stderr.strip()[-300:]}")
    prepared = re.search(r"prepared in ([\d.]+)s \(tokenizer\) \+ ([\d.]+)s \(data\)", done.stdout)
    trained = re.search(r"trained to step \d+ in (\d+)s", done.stdout)
    device = re.search(r"training tokens, (\S+ \S+),", done.stdout).group(1)
    last = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r][-1]
    return {"script": script, "dtype": dtype, "device": device, "seed": seed, "whole_s": round(whole, 1),
            "tokenizer_s": float(prepared.group(1)), "data_s": float(prepared.group(2)),
            "train_s": float(trained.group(1)), **{k: v for k, v in last.items() if METRICS.fullmatch(k)}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated (default: all five)")
    p.add_argument("--dtypes", default="auto", help="comma-separated: auto, fp32, bf16 (default: auto)")
    p.add_argument("--seeds", default="0",
                   help="comma-separated seeds, two or more for the run-to-run spread (default: 0)")
    p.add_argument("--no-warm", action="store_true", help="cold starts only")
    p.add_argument("--out", default="runs/default-runs",
                   help="run folders, and results.json (default: runs/default-runs)")
    args = p.parse_args(argv)
    out, rows, machine = Path(args.out), [], cpu()
    print(f"CPU: {machine}", flush=True)
    for script in args.scripts.split(","):
        for dtype in args.dtypes.split(","):
            for seed in map(int, args.seeds.split(",")):
                folder = out / f"{script}-{dtype}-{seed}"
                shutil.rmtree(folder, ignore_errors=True)
                for start in ("cold",) if args.no_warm else ("cold", "warm"):
                    if start == "warm":
                        for name in ("ckpt.pt", "metrics.jsonl"):
                            (folder / name).unlink()
                    rows.append({"start": start, "cpu": machine, **run(script, folder, dtype, seed)})
                    r = rows[-1]
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("val_"))
                    print(f"{script:8} {r['dtype']:5} {r['device']:10} seed {seed} {start}: {r['whole_s']:6.1f}s whole "
                          f"(tokenizer {r['tokenizer_s']:.1f}s, data {r['data_s']:.1f}s, training "
                          f"{r['train_s']:.0f}s); {shown}", flush=True)
                    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
