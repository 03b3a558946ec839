"""The host's time to build one training micro-batch (get_batch: examples, masks, tensors), one CPU thread, at a
preset's micro-batch, on the default corpus; the share of a GPU step it would be at a given MFU; and how long the
training loop waits for a batch when a thread builds them ahead (the scripts' --prefetch) while it sleeps through
each step.

    python benchmarks/host_time.py [SCRIPT ...] [--size base] [--mfu 0.45] [--peak 989e12] [--prefetch 4]

The GPU step time is an estimate, not a measurement: tokens × the script's FLOPs per token / (MFU × peak); the
sleep stands in for it. Each script's data is prepared once in runs/host_time/SCRIPT, then reused.
"""

import argparse
import contextlib
import importlib
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]


def prepared(name, size):
    """The script's module, its preset and its training split, prepared once in runs/host_time/SCRIPT."""
    module = importlib.import_module(name)
    cfg = module.PRESETS[size]
    out = ROOT / "runs" / "host_time" / name
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the preparation's progress lines, the first time
        corpus = module.read_corpus(None)
        data = module.load_data(corpus, module.get_tokenizer(out, corpus, cfg), out, cfg)["train"]
    return module, cfg, data


def micro_batches(cfg, n):
    return (i * cfg.batch_size + np.arange(cfg.batch_size) for i in range(n))


def build_time(module, cfg, data, repeats=20):
    """Median seconds of get_batch for the preset's micro-batch, and the batch's shape."""
    times = []
    for ids in micro_batches(cfg, repeats):
        t0 = time.perf_counter()
        batch = module.get_batch(data, ids, 0, cfg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), batch["input_ids"].shape


def loop_wait(module, cfg, data, ahead, step_seconds, batches=30):
    """Median seconds the loop waits in next() while a thread builds up to `ahead` batches and each step sleeps."""
    loader = module.training_batches(data, micro_batches(cfg, batches + 1), 0, cfg, ahead, torch.device("cpu"))
    next(loader)  # the thread's start
    waits = []
    for _ in range(batches):
        time.sleep(step_seconds)
        t0 = time.perf_counter()
        next(loader)
        waits.append(time.perf_counter() - t0)
    return statistics.median(waits)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scripts", nargs="*", default=SCRIPTS, help="(default: all five)")
    p.add_argument("--size", default="base", help="the preset (default: base)")
    p.add_argument("--mfu", type=float, default=0.45, help="the MFU the GPU step is assumed to run at (default: 0.45)")
    p.add_argument("--peak", type=float, default=989e12,
                   help="the GPU's dense bf16 FLOP/s (default: 989e12, H100 and H200)")
    p.add_argument("--prefetch", type=int, default=4,
                   help="batches built ahead, as the scripts' --prefetch (default: 4)")
    args = p.parse_args(argv)
    unknown = [s for s in args.scripts if s not in SCRIPTS]
    if unknown or not 0 < args.mfu <= 1 or args.peak <= 0 or args.prefetch < 1:
        print(f"error: {'unknown script ' + unknown[0] if unknown else '--mfu in (0, 1], --peak > 0, --prefetch > 0'}",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    print(f"one CPU thread, torch {torch.__version__}; GPU step estimated at {args.mfu:.0%} MFU of "
          f"{args.peak / 1e12:.0f} TFLOP/s")
    print(f"| script | micro-batch | host ms | estimated GPU ms | host share in the loop | wait with "
          f"--prefetch {args.prefetch}, ms | share |\n|---|---|---:|---:|---:|---:|---:|")
    for name in args.scripts:
        module, cfg, data = prepared(name, args.size)
        seconds, shape = build_time(module, cfg, data)
        with torch.device("meta"):  # the parameter count only
            model = module.Model(cfg)
        gpu = module.flops_per_token(model, cfg) * cfg.batch_size * cfg.seq_len / (args.mfu * args.peak)
        waited = loop_wait(module, cfg, data, args.prefetch, gpu)
        print(f"| {name}.py | {shape[0]} × {shape[1]} | {seconds * 1e3:.2f} | {gpu * 1e3:.1f} | "
              f"{seconds / (seconds + gpu):.1%} | {waited * 1e3:.2f} | {waited / (waited + gpu):.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
