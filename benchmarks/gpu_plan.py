"""The plan of benchmarks/gpu_check.sh on one H100: what each stage runs and its estimated seconds, from the scripts'
own flops_per_token, so that a check fits its window (one machine start of about 4 minutes, then 420 s, and room
for one rerun, in 15 minutes of device time).

    python benchmarks/gpu_plan.py train [SCRIPT ...]    # the first slot: the CUDA tests, then each script trained
    python benchmarks/gpu_plan.py bench [SCRIPT ...]    # a second slot: bench.py, ours against Hugging Face
    python benchmarks/gpu_plan.py compare               # a second slot: compare.py --size small --budget 1.5e16
    ... --env FILE                                      # also write what gpu_check.sh runs, as shell variables

Prints one line a stage and `plan: N s in all`. A stage that would take the plan past 420 s is left out and named,
with the command that runs it in another slot. The estimates: 35% MFU of the H100's 989 TFLOP/s (bf16, dense) for
the steps; a cold torch.compile of 40 s a model, 60 s for ELECTRA's two encoders (gpt.py and bert.py at base took
56-57 s whole for 300 compiled steps on an H200 on 2026-11-26, 20 s of it training); 10 s to start a script.
"""

import argparse
import importlib
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEAK, MFU, HF_MFU = 989e12, 0.35, 0.25  # H100 SXM bf16 dense; ours, and the reference's at worst
COMPILE = {"electra": 60}  # seconds of a cold torch.compile; the others 40
COMPILE_S, START_S, TABLE_S, IMPORTS_S = 40, 10, 5, 5
WINDOW = 420  # seconds: the check's share of a 15-minute window
ORDER = ["roberta", "albert", "electra", "gpt", "bert"]  # never run on a GPU first, then the measured two
# each script's micro-batch at base, one a step: its preset's (ELECTRA's 256 sequences cut to 64)
BATCH = {"gpt": 64, "bert": 256, "roberta": 32, "albert": 64, "electra": 64}
STEPS = 200  # two log intervals of 100: the second is the steady state (the first holds compilation)
PREPARE_S = 60  # the five --prepare-only in parallel on 16 cores, beside the CUDA tests
PYTEST = "-m gpu -k fp16"  # the one CUDA test the training runs do not cover: fp16 with its loss scaler
BENCH = "--device cuda --size base --seq-len 512 --batch-size 32 --compile --steps 10 --warmup 3"
COMPARE = "--size small --budget 1.5e16"


def base_flops(script, seq_len=None):
    """flops_per_token of the script's base model (built on the meta device: no memory, no time), and its config."""
    import dataclasses

    import torch

    module = importlib.import_module(script)
    cfg = module.PRESETS["base"]
    if seq_len:
        cfg = dataclasses.replace(cfg, seq_len=seq_len)
    with torch.device("meta"):
        model = module.Model(cfg)
    return module.flops_per_token(model, cfg), cfg


def train_stage(script):
    fpt, cfg = base_flops(script)
    tokens = STEPS * BATCH[script] * cfg.seq_len
    steps_s = tokens * fpt / (PEAK * MFU)
    eval_s = 2 * cfg.eval_examples * cfg.seq_len * fpt / 3 / (PEAK * MFU)  # forward only, at step 0 and the end
    compile_s = COMPILE.get(script, COMPILE_S)
    seconds = START_S + compile_s + eval_s + steps_s
    what = (f"{script}.py --train --size base --compile: {STEPS} steps of {BATCH[script]} x {cfg.seq_len} "
            f"({tokens / 1e6:.1f}M tokens): start {START_S} + compile {compile_s} + evaluation {eval_s:.0f} "
            f"+ steps {steps_s:.0f}")
    return what, seconds


def bench_stage(script):
    fpt, cfg = base_flops(script, seq_len=512)
    steps = 10 + 3 + 3  # timed, warm-up, profiled
    work = steps * 32 * 512 * fpt / PEAK
    compile_s = COMPILE.get(script, COMPILE_S)
    seconds = START_S + 2 * compile_s + work / MFU + work / HF_MFU
    return f"bench.py {script}: ours and Hugging Face, each compiled ({compile_s}) and {steps} steps of 32 x 512", \
        seconds


def compare_stage():
    """compare.py's own estimate of its run on CUDA (what its --dry-run prints), in seconds."""
    import compare
    import finetune
    import torch

    args = compare.build_parser().parse_args(COMPARE.split())
    return compare.total_estimate(compare.plan(args), args, finetune.read_task(args.task), torch.device("cuda"))


def plan(stage, scripts):
    """[(what, seconds)] that fit the window in order, the scripts left out, and {script: seconds} of those in."""
    fixed = [("check the imports and the GPU", IMPORTS_S)]
    if stage == "train":
        fixed.append((f"prepare the data (--prepare-only, all in parallel) while pytest {PYTEST} runs", PREPARE_S))
    elif stage == "compare":
        return fixed + [(f"compare.py {COMPARE} (its own plan, --dry-run)", math.ceil(compare_stage()))], [], {}
    fixed_end = [("the table (benchmarks/gpu_table.py)", TABLE_S)]
    stages, left, runs = [], [], {}
    total = sum(s for _, s in fixed + fixed_end)
    for script in sorted(scripts, key=ORDER.index):
        what, seconds = (train_stage if stage == "train" else bench_stage)(script)
        seconds = math.ceil(seconds)  # whole seconds, so that the lines add up to the total
        if total + seconds <= WINDOW and not left:
            stages.append((what, seconds))
            runs[script] = seconds
            total += seconds
        else:
            left.append(script)
    return fixed + stages + fixed_end, left, runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["train", "bench", "compare"], help="which check")
    p.add_argument("scripts", nargs="*", default=ORDER, help="scripts to run (default: all five, in ORDER)")
    p.add_argument("--env", metavar="FILE", help="also write the scripts that fit, their order and the commands, "
                                                 "as shell variables for gpu_check.sh")
    p.add_argument("--smoke", choices=["tiny", "base"],
                   help="write the CPU rehearsal's commands instead (the plan printed is still the GPU's): tiny, a "
                        "few steps; base, 2 steps of one sequence at base shapes, compiled, a short evaluation")
    args = p.parse_args(argv)
    unknown = [s for s in args.scripts if s not in ORDER]
    if unknown:
        print(f"error: unknown script {unknown[0]}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    stages, left, runs = plan(args.stage, args.scripts)
    print(f"plan for one H100 ({PEAK / 1e12:.0f} TFLOP/s bf16 at {MFU:.0%} MFU; see benchmarks/gpu_plan.py):")
    for what, seconds in stages:
        print(f"  {seconds:5.0f} s  {what}")
    if left:
        print(f"  left for another slot (past {WINDOW} s): GPU_CHECK_STAGES={args.stage} "
              f"bash benchmarks/gpu_check.sh {' '.join(left)}")
    print(f"plan: {sum(s for _, s in stages):.0f} s in all")
    if args.env:
        Path(args.env).write_text(commands(args, stages, runs))
    return 0


def commands(args, stages, runs):
    """What gpu_check.sh runs, as shell variables: the scripts in order, and per script its micro-batch, sequence
    length and time limit (twice its estimate; on the CPU, a generous fixed one)."""
    if args.smoke is None:
        env = dict(DEVICE="cuda", SIZE="base", STEPS=STEPS, INTERVAL=STEPS // 2, TRAIN_ARGS="--compile",
                   PYTEST_ARGS=PYTEST, BENCH_ARGS=BENCH, COMPARE_ARGS=COMPARE, DEADLINE_S=480)
        batch = BATCH
    elif args.smoke == "tiny":
        env = dict(DEVICE="cpu", SIZE="tiny", STEPS=4, INTERVAL=2, TRAIN_ARGS="--compile", PYTEST_ARGS="",
                   BENCH_ARGS="--device cpu --size tiny --steps 2 --warmup 1",
                   COMPARE_ARGS="--size tiny --papers bert,electra --budget 2e12 --seeds 1", DEADLINE_S=900)
        batch = dict.fromkeys(ORDER, 8)
    else:  # base shapes on the CPU: one sequence, two steps, two evaluation sequences
        env = dict(DEVICE="cpu", SIZE="base", STEPS=2, INTERVAL=1, TRAIN_ARGS="--compile --eval-examples 2",
                   PYTEST_ARGS="", BENCH_ARGS="--device cpu --size base --batch-size 1 --steps 1 --warmup 1",
                   COMPARE_ARGS="--size tiny --papers bert,electra --budget 2e12 --seeds 1", DEADLINE_S=1800)
        batch = dict.fromkeys(ORDER, 1)
    lines = [f"RUN=({' '.join(runs)})"] + [f"{k}='{v}'" for k, v in env.items()]
    for s in runs:
        cfg = importlib.import_module(s).PRESETS[env["SIZE"]]
        limit = 2 * runs[s] if args.smoke is None else 600
        lines += [f"BATCH_{s}={batch[s]}", f"SEQ_{s}={cfg.seq_len}", f"LIMIT_{s}={limit:.0f}"]
    total = sum(s for _, s in stages)
    return "\n".join(lines + [f"PLAN_S={total:.0f}", f"LIMIT_S={2 * total if args.smoke is None else 1200:.0f}"]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
