"""Compare the five pretraining objectives at equal compute: one encoder shape, one FLOP budget, one downstream task.

Each paper script pretrains from scratch, with the same shape, corpus, tokenizer size, batch and schedule shape, for
as many steps as the budget buys its objective (FLOPs counted as the ELECTRA paper counts them). A linear probe on
frozen features scores the checkpoints at 1/8, 1/4, 1/2 and all of the budget, and a randomly initialised model of
the same shape as the floor, on the task and on word order (which of two sentences is the original, the other with two
neighbouring words swapped); finetune.py (the paper's recipe, the same seeds and splits for all) fine-tunes the last
checkpoint and the floor. The task's sentences are kept out of the default pretraining corpus. Gains over the floor
and differences against BERT come with bootstrap 95% intervals; with BERT and ALBERT both in, each one's sentence-pair
head is scored on the other's task (ALBERT Table 5), and their parameters and memory are set side by side. Out come
results.md (its reading written from the numbers), results.json and score_vs_flops.png.

    python compare.py                        # tiny size, built-in task: about 12 minutes on 2 CPU cores
    python compare.py --dry-run              # the plan only: steps per paper and the estimated time
    python compare.py --size small           # ELECTRA-Small's shape on one GPU: ELECTRA, BERT without NSP, GPT-1
    python compare.py --papers bert,electra --set electra.gen_size=0.5     # one of ELECTRA's levers

Rerunning with the same --out skips the stages already finished, so a killed comparison resumes where it stopped.
"""

import argparse
import ast
import contextlib
import copy
import dataclasses
import glob
import hashlib
import importlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import finetune

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
FRACTIONS = [(1, 8), (1, 4), (1, 2), (1, 1)]  # the checkpoints kept: the ELECTRA paper's "x% trained" rows

# One shape per size, for every paper; each paper's own settings (learning rate, initialisation, dropout, masking)
# come from its preset, `preset`, except where `lr` sets one rate for all. `papers`: what a paper's architecture
# adds to the shape (ALBERT's factorised embedding E, ELECTRA's embedding E and generator width). `seeds`: the
# fine-tuning seeds of the last checkpoint and of the floor unless --seeds says.
SIZES = {
    # ours: the tiny presets' width and depth, a minute or two per paper on 2 CPU cores. Sequences of 32, as the
    # tiny ELECTRA preset: at 64, ELECTRA's discriminator stayed at the constant guess (AUC 0.52 after 891 steps);
    # at 32 its AUC passes 0.56 by step 500
    "tiny": {"shape": dict(layers=2, hidden=128, heads=2, ffn=512, vocab_size=4096, seq_len=32, batch_size=64,
                           grad_accum=1),
             "papers": {"albert": {"embed": 64}, "electra": {"embed": 128, "gen_size": 1 / 4}},
             "preset": "tiny", "lr": None, "budget": 2.4e13, "seeds": 3},
    # ELECTRA-Small's shape (ELECTRA Table 6) and its learning rate for all, as the ELECTRA paper trained BERT-Small.
    # By default ELECTRA against BERT without NSP (the ELECTRA release's baseline, its electra_objective=False),
    # with GPT-1 as the anchor: 1/14 of ELECTRA-Small's 1.4e18 FLOPs each, about 20 minutes of pretraining for the
    # three on one H100/H200 at the RATE below
    "small": {"shape": dict(layers=12, hidden=256, heads=4, ffn=1024, vocab_size=30522, seq_len=128, batch_size=128,
                            grad_accum=1),
              "papers": {"albert": {"embed": 128}, "electra": {"embed": 128, "gen_size": 1 / 4}},
              "preset": "base", "lr": 5e-4, "budget": 1e17, "seeds": 3,
              "run": ["gpt", "bert", "electra"], "sets": {"bert": {"next_sentence": False}}},
    # BERT-Base's shape, batch 256 as 32 x 8 micro-batches; each paper's own base learning rate
    "base": {"shape": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab_size=30522, seq_len=512, batch_size=32,
                           grad_accum=8),
             "papers": {"albert": {"embed": 128}, "electra": {"embed": 768, "gen_size": 1 / 3}},
             "preset": "base", "lr": None, "budget": 1e18, "seeds": 3},
}
DERIVED = ("steps", "warmup", "schedule", "max_predictions", "log_interval", "eval_interval")  # set by the plan
WARMUP = 0.05  # one schedule shape for all: linear warmup over the first 5% of the steps, then linear decay to 0
PREDICTIONS = 20 / 128  # vocabulary predictions per token for every masked LM at 15% masking: BERT's release, 20 at
# length 128; a masking rate set with --set scales it
# what the plan assumes before a stage has been timed, in counted FLOPs per second: cpu as the default runs of the
# tiny presets measured on 2 cores in bf16 (2.2e11-3.4e11); cuda as bert.py measured on an H200 (bf16, --compile,
# 256 x 128: 2.8e14 at 4 layers of 512, 2.9e14 at base; benchmarks/RESULTS.md), not yet at ELECTRA-Small's shape,
# nor without --compile, as compare.py runs; mps is a guess
RATE = {"cpu": 2.5e11, "cuda": 2.8e14, "mps": 5e12}
SETUP = 10  # seconds a paper script spends on the default corpus before its first step (tokenizer, examples)

# each paper's own pretraining metrics, shown beside the downstream scores
OWN_METRICS = {"gpt": ["val_loss"], "bert": ["val_mlm_acc", "val_nsp_acc"], "roberta": ["val_mlm_acc"],
               "albert": ["val_mlm_acc", "val_sop_acc"], "electra": ["val_mlm_acc", "val_auc"]}
PROBE_STEPS = 300  # the probe's full-batch optimiser steps

# The papers' own numbers, for reference beside ours: GLUE dev score and pretraining FLOPs (ELECTRA, Table 1)
REFERENCE = [
    ("GPT", "117M", 4.0e19, 78.8),
    ("BERT-Small", "14M", 1.4e18, 75.1),
    ("ELECTRA-Small", "14M", 1.4e18, 79.9),
    ("BERT-Base", "110M", 6.4e19, 82.2),
    ("ELECTRA-Base", "110M", 6.4e19, 85.1),
]


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


# --- FLOPs, counted as the ELECTRA paper counts them (its appendix; flops_computation.py of its release) ---
# One FLOP is one arithmetic operation: a multiply-add is 2, an exp is 1. The backward pass costs as much as the
# forward pass. An embedding lookup counts as a product with a one-hot vector. Element-wise costs per value:
DROPOUT = 4  # a random number, a comparison, the mask, the 1 / (1 - p) scale
LAYER_NORM = 5  # mean, variance (square and sum), scale, shift
ACTIVATION = 8  # GELU's tanh form
SOFTMAX = 5  # max, subtract, exp, sum, divide


@dataclass
class Shape:
    """What the FLOPs depend on: an encoder of `layers` x (hidden, heads, ffn) on sequences of `seq` tokens from a
    vocabulary of `vocab`, its embeddings of width `embed` (projected to `hidden` where they differ)."""
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    seq: int
    embed: int
    projected: bool = False  # a projection E -> hidden even where they are equal (ALBERT's is always there)


def layer_flops(s):
    """Forward FLOPs of one Transformer layer, per token."""
    h, T = s.hidden, s.seq
    attention = (3 * (2 * h * h + h)  # query, key and value projections with their biases
                 + 2 * h * T  # the scores q·k against every position
                 + (SOFTMAX + DROPOUT + 1) * s.heads * T  # softmax, dropout and the 1/sqrt(d) scale of each score
                 + 2 * h * T  # the weighted sum of the values
                 + 2 * h * h + h  # the output projection
                 + DROPOUT * h + h + LAYER_NORM * h)  # dropout, residual, LayerNorm (5 per value; the release: 5)
    feed_forward = (2 * h * s.ffn + s.ffn + ACTIVATION * s.ffn  # up-projection, bias, GELU
                    + 2 * s.ffn * h + h + DROPOUT * h + h + LAYER_NORM * h)  # down-projection, ..., LayerNorm
    return attention + feed_forward


def embedding_flops(s):
    """Forward FLOPs of the input embeddings, per token: the token lookup, positions and segments (one-hot products
    too), their sum, LayerNorm and dropout; then a projection where the embedding width E is not the hidden width."""
    e = s.embed
    flops = 2 * e * s.vocab + 2 * e * (s.seq + 2) + 2 * e + LAYER_NORM * e + DROPOUT * e
    return flops + (2 * e * s.hidden + s.hidden if e != s.hidden or s.projected else 0)


def mlm_flops(s):
    """Forward FLOPs of one masked-LM prediction: the head's dense layer to E, GELU and LayerNorm, the product with
    the vocabulary, the softmax and picking the target."""
    e = s.embed
    return 2 * s.hidden * e + e + ACTIVATION * e + LAYER_NORM * e + 2 * e * s.vocab + SOFTMAX * s.vocab + 2 * s.vocab


def lm_flops(s):
    """Forward FLOPs of one next-token prediction of GPT-1: straight from the hidden state to the vocabulary."""
    return 2 * s.hidden * s.vocab + SOFTMAX * s.vocab + 2 * s.vocab


def binary_flops(s, outputs=1):
    """Forward FLOPs of one decision from a hidden state (ELECTRA's per-token head, one logit; BERT's NSP and
    ALBERT's SOP head on [CLS], two logits): a dense layer, its activation, the logits."""
    return 2 * s.hidden * s.hidden + s.hidden + ACTIVATION * s.hidden + 2 * s.hidden * outputs


def encoder_flops(s):
    """Forward FLOPs of the embeddings and the layers for one sequence."""
    return s.seq * (embedding_flops(s) + s.layers * layer_flops(s))


def sequence_flops(paper, s, predictions, generator=None):
    """Forward FLOPs of one training sequence of `paper`: the encoder, and the vocabulary projection only where a
    loss is taken (`predictions` masked slots; every position for GPT-1). ELECTRA adds its generator, a `generator`
    shape on the same embeddings, and replaces the vocabulary by one binary decision per token."""
    if paper == "gpt":
        return encoder_flops(s) + s.seq * lm_flops(s)
    if paper == "roberta":
        return encoder_flops(s) + predictions * mlm_flops(s)
    if paper in ("bert", "albert"):
        return encoder_flops(s) + predictions * mlm_flops(s) + binary_flops(s, 2)  # + the sentence-pair head
    if paper == "electra":
        discriminator = encoder_flops(s) + s.seq * binary_flops(s)
        return discriminator + encoder_flops(generator) + predictions * mlm_flops(generator)
    raise ValueError(paper)


def shapes_of(paper, cfg):
    """The Shape (and ELECTRA's generator Shape) of a paper script's Config; the masked slots per sequence."""
    s = Shape(cfg.layers, cfg.hidden, cfg.heads, cfg.ffn, cfg.vocab_size, cfg.seq_len,
              getattr(cfg, "embed", cfg.hidden), projected=paper == "albert")
    generator = None
    if paper == "electra":
        g = cfg.gen_hidden  # heads and FFN as the script sizes its generator
        generator = dataclasses.replace(s, hidden=g, heads=max(1, g // 64), ffn=4 * g)  # projected if E != g
    return s, generator, getattr(cfg, "max_predictions", cfg.seq_len)


def lookup_share(paper, cfg):
    """The part of a step's counted FLOPs that are embedding lookups counted as one-hot products (ELECTRA embeds
    twice: the generator's input and the discriminator's): large at small sizes, nothing a GPU multiplies out."""
    s, _, _ = shapes_of(paper, cfg)
    lookups = 2 * s.embed * s.vocab * s.seq * (2 if paper == "electra" else 1)
    return 2 * cfg.batch_size * cfg.grad_accum * lookups / step_flops(paper, cfg)


def step_flops(paper, cfg):
    """Training FLOPs of one optimiser step: forward and backward (twice the forward) of every sequence."""
    s, generator, predictions = shapes_of(paper, cfg)
    return 2 * cfg.batch_size * cfg.grad_accum * sequence_flops(paper, s, predictions, generator)


# --- the plan ---


def paper_config(mod, paper, size, overrides):
    """The paper's Config for the comparison: its preset for `size` with the shared shape, and the --set values."""
    spec = SIZES[size]
    base = mod.PRESETS[spec["preset"]]
    shape = dict(spec["shape"], **spec["papers"].get(paper, {}))
    if spec["lr"] is not None:
        shape["lr"] = spec["lr"]
    for field, value in overrides.get(paper, {}).items():
        if field not in {f.name for f in dataclasses.fields(base)}:
            raise UserError(f"--set {paper}.{field}: {paper}.py's Config has no field {field!r}")
        if field in spec["shape"] or field in DERIVED:
            raise UserError(f"--set {paper}.{field}: the comparison sets {field} the same for every paper")
        default = getattr(base, field)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"--set {paper}.{field}={value!r}: give True or False, like its default {default!r}")
        if not isinstance(default, bool) and not (is_number(value) and is_number(default) and value >= 0
                                                  and type(value) in (type(default), int)):
            raise UserError(f"--set {paper}.{field}={value!r}: give a number of 0 or more, like its default "
                            f"{default!r}")
        shape[field] = value
    if hasattr(base, "max_predictions"):  # room for the masking rate's share of a sequence, --set's too
        shape["max_predictions"] = round(PREDICTIONS * shape["seq_len"] * shape.get("mask_prob", base.mask_prob) / 0.15)
    cfg = dataclasses.replace(base, **shape)
    sizes = {"max_len": cfg.max_len - cfg.seq_len + 1, "embed": getattr(cfg, "embed", 1),
             "gen_size": getattr(cfg, "gen_hidden", 1), "type_vocab": getattr(cfg, "type_vocab", 1)}
    for field, room in sizes.items():
        if room < 1:  # a layer of width 0, or fewer positions than a sequence has
            raise UserError(f"--set {paper}.{field}={getattr(cfg, field)!r} leaves no model to build (max_len must "
                            f"be at least the sequence length {cfg.seq_len}; widths and sizes at least 1)")
    return cfg


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def plan(args):
    """Steps, kept steps and estimated seconds of every stage, from the arguments; checks them first."""
    if args.size not in SIZES:
        raise UserError(f"--size {args.size!r}: choose one of {', '.join(SIZES)}")
    papers = [p.strip() for p in (args.papers or ",".join(SIZES[args.size].get("run", PAPERS))).split(",")
              if p.strip()]
    unknown = [p for p in papers if p not in PAPERS]
    if unknown or not papers:
        raise UserError(f"--papers: unknown paper {(unknown or [''])[0]!r}; choose from {', '.join(PAPERS)}")
    if len(set(papers)) != len(papers):
        raise UserError("--papers names a paper twice")
    budget = SIZES[args.size]["budget"] if args.budget is None else args.budget
    if not (budget > 0 and math.isfinite(budget)):
        raise UserError(f"--budget must be a positive number of FLOPs, got {args.budget}")
    args.seeds = SIZES[args.size]["seeds"] if args.seeds is None else args.seeds
    if args.seeds < 1:
        raise UserError(f"--seeds must be 1 or more, got {args.seeds}")
    overrides = {paper: dict(sets) for paper, sets in SIZES[args.size].get("sets", {}).items() if paper in papers}
    for paper, sets in parse_sets(args.set, papers).items():  # --set wins over the size's own settings
        overrides.setdefault(paper, {}).update(sets)
    rows = []
    for paper in papers:
        mod = importlib.import_module(paper)
        cfg = paper_config(mod, paper, args.size, overrides)
        per_step = step_flops(paper, cfg)
        steps = int(budget // per_step)
        if steps < 8:  # the 1/8 checkpoint needs a step of its own
            raise UserError(f"--budget {budget:.3g} buys {paper} {steps} step(s) of {per_step:.3g} FLOPs; the 1/8 "
                            f"checkpoint needs 8 or more: raise --budget to at least {8 * per_step:.3g}")
        cfg = dataclasses.replace(cfg, steps=steps, warmup=max(1, round(WARMUP * steps)), schedule="linear",
                                  log_interval=max(1, steps // 20), eval_interval=steps)
        kept = [steps * a // b for a, b in FRACTIONS]
        try:
            with torch.device("meta"):  # the parameter count without the memory
                model = mod.Model(cfg)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            raise UserError(f"--set: {paper}.py cannot build a model with these values ({e})") from None
        params = model.num_params()
        discriminator = (sum(p.numel() for n, p in model.named_parameters()  # what fine-tuning keeps of ELECTRA
                             if not n.startswith(("generator.", "mlm.", "head."))) if paper == "electra" else None)
        rows.append({"paper": paper, "config": cfg, "flops_per_step": per_step, "steps": steps, "kept": kept,
                     "flops": per_step * steps, "parameters": params, "lookups": lookup_share(paper, cfg),
                     "discriminator": discriminator})
    return {"papers": papers, "budget": budget, "rows": rows, "sets": overrides}


def parse_sets(values, papers):
    """--set PAPER.FIELD=VALUE, repeated: {paper: {field: value}}."""
    overrides = {}
    for item in values or []:
        target, _, text = item.partition("=")
        paper, _, field = target.partition(".")
        if not (paper and field and text):
            raise UserError(f"--set {item!r}: write PAPER.FIELD=VALUE, e.g. electra.gen_size=0.5")
        if paper not in papers:
            raise UserError(f"--set {item!r}: {paper!r} is not among --papers")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserError(f"--set {item!r}: {text!r} is not a number") from None
        overrides.setdefault(paper, {})[field] = value
    return overrides


def fraction_name(a, b):
    return "1" if a == b else f"{a}/{b}"


def print_plan(p, args, task, device):
    rows = p["rows"]
    s = SIZES[args.size]["shape"]
    print(f"compare: {args.size} size, {p['budget']:.3g} FLOPs of pretraining per paper, task {task['name']} "
          f"({len(task['train'])} training examples), {args.seeds} seed(s), {device}, out {args.out}")
    print(f"shape for all: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, FFN {s['ffn']}, "
          f"vocabulary {s['vocab_size']:,}, sequences of {s['seq_len']}, batch {s['batch_size'] * s['grad_accum']}; "
          f"warmup {WARMUP:.0%} of the steps, then linear decay"
          + "".join(f"; {paper}.{k}={v!r}" for paper, sets in p["sets"].items() for k, v in sets.items()))
    print(f"{'paper':<8} {'parameters':>11} {'FLOPs/step':>11} {'lookups':>8} {'steps':>8}  "
          f"{'kept at steps (1/8 1/4 1/2 1)':<32}{'est. time':>9}")
    for r in rows:
        print(f"{r['paper']:<8} {r['parameters']:>11,} {r['flops_per_step']:>11.3g} {r['lookups']:>8.0%} "
              f"{r['steps']:>8,}  {' '.join(map(str, r['kept'])):<32}"
              f"{clock(stage_seconds('pretrain', r, p, args, task, device)):>9}")
    print("(lookups: the share of the counted FLOPs that are embedding lookups, counted as one-hot products as the "
          "ELECTRA paper counts them)")
    probing = sum(stage_seconds("probe", r, p, args, task, device) for r in rows)
    finetuning = sum(stage_seconds("finetune", r, p, args, task, device) for r in rows)
    total = total_estimate(p, args, task, device)
    print(f"probes: {len(rows) * (len(FRACTIONS) + 1)} models (the kept checkpoints and a random init of each paper), "
          f"about {clock(probing)}; fine-tuning: the {len(rows)} last checkpoints and their random inits, "
          f"{args.seeds} seed(s) each, {2 * len(rows) * args.seeds} runs, about {clock(finetuning)}; total about "
          f"{clock(total)}, {1 - (probing + finetuning) / total:.0%} of it pretraining (estimates until the first "
          "stages are timed)", flush=True)


def finetune_seconds(p, task, size, device):
    """A guess at one fine-tuning run before one has been timed: 6 FLOPs per weight of the layers per token, about
    40 tokens per example, the epochs, at 2/3 of the pretraining rate (measured at the tiny size)."""
    cfg = p["rows"][0]["config"]
    epochs = 10 if size == "tiny" else 3  # the tiny recipe's, the papers' (about)
    compute = 6 * cfg.layers * 12 * cfg.hidden ** 2 * 40 * len(task["train"]) * epochs / (RATE[device.type] * 2 / 3)
    return max(5.0, compute)  # at least the seconds of building, encoding and exporting


def stage_seconds(what, row, p, args, task, device):
    """The estimated seconds of one stage, until stages of its kind have been timed."""
    if what == "pretrain":
        return row["flops"] / RATE[device.type] + SETUP
    if what == "cross":  # two evaluations of one model
        return 5.0
    if what == "probe":  # forward passes over the task for five models: cheap beside the rest
        return (len(FRACTIONS) + 1) * max(2.0, finetune_seconds(p, task, args.size, device) / 30)
    return 2 * args.seeds * finetune_seconds(p, task, args.size, device)


def total_estimate(p, args, task, device):
    return sum(stage_seconds(w, r, p, args, task, device) for w in ("pretrain", "probe", "finetune") for r in p["rows"])


def clock(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --- the stages ---


def key_of(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_stage(folder, key, what, redo=False):
    """The record of a stage in `folder`, or None to (re)start it: a stage that never started, one that stopped
    before its first checkpoint, or (with `redo`, for fine-tuning) one made with other settings. A pretraining with
    other settings is refused: its checkpoints are the costly part of a comparison."""
    path = folder / "stage.json"
    if not path.exists():
        if (folder / "ckpt.pt").exists() or (folder / "results.json").exists():
            raise UserError(f"{folder} holds a run this comparison did not start; choose another --out")
        return None
    record = json.loads(path.read_text())
    if record.get("key") != key:
        if redo or not (record.get("done") or (folder / "ckpt.pt").exists()):
            return None
        raise UserError(f"{folder} holds {what} made with other settings; rerun with the same arguments to resume, "
                        "or choose another --out")
    return record


def write_stage(folder, record):
    tmp = folder / "stage.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / "stage.json")


@contextlib.contextmanager
def quiet(log_path):
    """The stage's own output goes to its log file; the terminal gets one line per stage."""
    with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def pretrain(row, args, out, data):
    """Pretrain one paper for its steps, keeping the checkpoints at the fractions; resumes a stopped run."""
    paper, cfg = row["paper"], row["config"]
    folder = out / "pretrain" / paper
    folder.mkdir(parents=True, exist_ok=True)
    key = key_of(paper, dataclasses.asdict(cfg), row["kept"], args.data or "the default corpus")
    record = read_stage(folder, key, f"a {paper} pretraining")
    if record and record["done"]:
        return record, False
    record = record or {"key": key, "done": False, "seconds": 0.0}
    write_stage(folder, record)
    mod = importlib.import_module(paper)
    mod.PRESETS["compare"] = cfg  # the comparison's shape, as one more preset of the script
    argv = ["--size", "compare", "--out", str(folder), "--keep", ",".join(map(str, row["kept"])), "--seed", "0",
            "--device", args.device, "--data", data] + (["--resume"] if (folder / "ckpt.pt").exists() else [])
    t0 = time.time()
    try:
        with quiet(folder / "train.log"):
            mod.train(mod.build_parser().parse_args(argv))
    except mod.UserError as e:
        raise UserError(f"pretraining {paper}: {e} (log: {folder / 'train.log'})") from None
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"pretraining {paper}: out of GPU memory at batch {cfg.batch_size}; the shape is shared, so "
                        "choose a smaller --size (the base size already runs micro-batches of 32)") from None
    finally:
        record["seconds"] += time.time() - t0
        write_stage(folder, record)
    missing = [k for k in row["kept"] if not (folder / f"ckpt-{k}.pt").exists()]
    if missing:  # kept steps are written before the latest checkpoint, so only a run made otherwise lacks one
        raise UserError(f"{folder} has no checkpoint of step {missing[0]}: remove the folder to pretrain {paper} again")
    evals = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    record.update(done=True, evaluations={str(e["step"]): {k: v for k, v in e.items() if k.startswith("val_")}
                                          for e in evals if e["step"] in row["kept"]})
    write_stage(folder, record)
    return record, True


def fine_tune(row, args, out, pretrain_key):
    """Fine-tune the checkpoint of the whole budget with finetune.py, and the random-init floor beside it."""
    paper = row["paper"]
    folder = out / "finetune" / paper
    folder.mkdir(parents=True, exist_ok=True)
    key = key_of(pretrain_key, args.task, args.seeds)
    record = read_stage(folder, key, f"a {paper} fine-tuning", redo=True)  # a new task or seeds: fine-tune again
    if record and record["done"]:
        return record, False
    write_stage(folder, {"key": key, "done": False})
    ckpt = out / "pretrain" / paper / f"ckpt-{row['steps']}.pt"
    argv = [paper, "--ckpt", str(ckpt), "--task", args.task, "--seeds", str(args.seeds), "--out", str(folder),
            "--device", args.device, "--max-len", str(row["config"].seq_len)]  # the positions pretraining trained
    t0 = time.time()
    try:
        with quiet(folder / "finetune.log"):
            finetune.main(argv)
    except finetune.UserError as e:
        raise UserError(f"fine-tuning {paper}: {e} (log: {folder / 'finetune.log'})") from None
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"fine-tuning {paper}: out of GPU memory; free the GPU or fine-tune on --device cpu") from None
    results = json.loads((folder / "results.json").read_text())
    record = {"key": key, "done": True, "seconds": time.time() - t0, "results": results}
    write_stage(folder, record)
    return record, True


# --- the probe: what the frozen features already hold of the task ---


@torch.no_grad()
def features(mod, model, pad_id, examples, max_len, device):
    """(N, H) final hidden states and (N, E) token embeddings of each example, in the paper's fine-tuning input
    format, averaged over its tokens, in the order of `examples`; and the labels (N,)."""
    model = model.to(device).eval()
    data = finetune.encode_task(mod, model.tokenizer, examples, max_len, False)
    states, embeds = torch.empty(len(examples), model.cfg.hidden), None
    for rows, batch in zip(finetune.groups(data, 64), finetune.batches(data, 64, pad_id)):
        batch = {k: v.to(device) for k, v in batch.items()}
        types = batch["token_type_ids"] if mod.__name__ in ("bert", "albert", "electra") else None
        mask = batch["attention_mask"][..., None].float()  # (B, T, 1)
        h = model.encode(batch["input_ids"], batch["attention_mask"], types).float()  # (B, T, H)
        e = model.embeddings.tokens(batch["input_ids"]).float()  # (B, T, E)
        if embeds is None:
            embeds = torch.empty(len(examples), e.shape[-1])
        states[torch.from_numpy(rows)] = ((h * mask).sum(1) / mask.sum(1)).cpu()
        embeds[torch.from_numpy(rows)] = ((e * mask).sum(1) / mask.sum(1)).cpu()
    return states, embeds, torch.from_numpy(data["labels"])


def linear_probe(train_x, train_y, dev_x, dev_y, classes):
    """Which dev examples (1 right, 0 wrong) a logistic regression on standardised features gets right: trained on
    the training features with full batches (Adam, a little weight decay) from zeros, so with no random draw."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    layer = torch.nn.Linear(train_x.shape[1], classes)
    torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(PROBE_STEPS):
        loss = torch.nn.functional.cross_entropy(layer((train_x - mean) / std), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (layer((dev_x - mean) / std).argmax(-1) == dev_y).int().tolist()


def probe(mod, model, task, device):
    """The linear probe of the model's frozen final states on the task (its answers on the dev split), from
    examples cut to the pretraining sequence length: the positions pretraining trained. Deterministic."""
    torch.manual_seed(0)  # GPT-1's task tokens join its embedding table as random rows
    clf = mod.Classifier(model, len(task["labels"]), mod.RECIPES["paper"])
    (train_x, _, train_y), (dev_x, _, dev_y) = (features(mod, clf.model, clf.pad_id, examples, model.cfg.seq_len,
                                                         device)
                                                for examples in (task["train"], next(iter(task["dev"].values()))))
    return linear_probe(train_x, train_y, dev_x, dev_y, len(task["labels"]))


def word_order(task, within=12):
    """The word-order task, built from the task's own sentences (held out of pretraining): each sentence beside
    itself with two neighbouring words swapped, among its first `within` words (inside a sequence of 32 tokens).
    Which of the two is the original needs word order and syntax, not topic words: both hold the same words.
    {"train": [(original, swapped)], "dev": [...]}, the swap drawn from each sentence's own seeded generator."""
    def pairs(examples):
        made = []
        for i, (text, _, _) in enumerate(examples):
            words = text.split()
            spots = [j for j in range(min(len(words), within) - 1) if words[j] != words[j + 1]]
            if spots:
                j = spots[np.random.default_rng(i).integers(len(spots))]
                made.append((text, " ".join(words[:j] + [words[j + 1], words[j]] + words[j + 2:])))
        return made
    return {"train": pairs(task["train"]), "dev": pairs(next(iter(task["dev"].values())))}


def order_probe(mod, model, order, device):
    """The linear probe on the word-order task: its features are the difference of the two sentences' mean final
    states, the original first in every other pair (label 1) and second in the others (label 0), so a topic
    cancels out. Its answers on the dev pairs."""
    torch.manual_seed(0)
    clf = mod.Classifier(model, 2, mod.RECIPES["paper"])
    x, y = [], []
    for split in ("train", "dev"):
        texts = [(t, None, 0) for pair in order[split] for t in pair]  # original, swapped, original, ...
        h = features(mod, clf.model, clf.pad_id, texts, model.cfg.seq_len, device)[0]
        first = torch.arange(len(order[split])) % 2 == 0  # the original first
        x.append(torch.where(first[:, None], h[0::2] - h[1::2], h[1::2] - h[0::2]))
        y.append(first.long())
    return linear_probe(x[0], y[0], x[1], y[1], 2)


def probe_stage(row, args, out, task, device, pretrain_key):
    """The probe of every kept checkpoint of one paper, and of a randomly initialised model (its floor)."""
    paper = row["paper"]
    folder = out / "probe" / paper
    folder.mkdir(parents=True, exist_ok=True)
    key = key_of(pretrain_key, args.task, PROBE_STEPS, "word order")
    record = read_stage(folder, key, f"a {paper} probe", redo=True)
    if record and record["done"]:
        return record, False
    mod, order = importlib.import_module(paper), word_order(task)
    t0, right, right_order = time.time(), {}, {}
    # a model read by both probes: GPT-1's first classifier adds its task tokens, the second finds them there
    for (a, b), steps in zip(FRACTIONS, row["kept"]):
        model = mod.model_from_checkpoint(out / "pretrain" / paper / f"ckpt-{steps}.pt")
        tokenizer = copy.deepcopy(model.tokenizer)  # before GPT-1's classifier adds its task tokens to it
        right[fraction_name(a, b)] = probe(mod, model, task, device)
        right_order[fraction_name(a, b)] = order_probe(mod, model, order, device)
    torch.manual_seed(0)
    floor = mod.Model(row["config"])
    floor.tokenizer = tokenizer  # the whole budget's
    right["floor"], right_order["floor"] = probe(mod, floor, task, device), order_probe(mod, floor, order, device)
    record = {"key": key, "done": True, "seconds": time.time() - t0, "right": right, "order": right_order}
    write_stage(folder, record)
    return record, True


def cross_stage(row, args, out, data_spec, device, pretrain_key):
    """ALBERT Table 5's cross-evaluation at the whole budget: BERT's NSP head scored on sentence-order pairs (its
    validation pairs in order, every other one swapped) and ALBERT's SOP head on next-sentence pairs (its pairs in
    order, every other B taken from a pair far away, cut to the length it replaces), beside each head on its own
    task. The paper: NSP gets 52.0% on SOP, SOP 78.9% on NSP."""
    paper = row["paper"]
    folder = out / "cross" / paper
    folder.mkdir(parents=True, exist_ok=True)
    key = key_of(pretrain_key, "cross")
    record = read_stage(folder, key, f"a {paper} cross-evaluation", redo=True)
    if record and record["done"]:
        return record, False
    mod, t0 = importlib.import_module(paper), time.time()
    cfg, trained = row["config"], out / "pretrain" / paper
    model = mod.model_from_checkpoint(trained / f"ckpt-{row['steps']}.pt").to(device)
    with quiet(folder / "cross.log"):
        val = dict(mod.load_data(mod.read_corpus(data_spec), model.tokenizer, trained, cfg)["val"])
    pairs = other_task_pairs(paper, val)
    rt = mod.setup_runtime(argparse.Namespace(device=device.type, dtype="fp32"))
    head = "val_nsp_acc" if paper == "bert" else "val_sop_acc"
    # the seed the pretraining's validation used (--seed 0, + 1): its own task is the logged figure, in fp32
    cross = mod.evaluate(model, {"val": {**val, **pairs}}, 1,
                         dataclasses.replace(cfg, eval_examples=len(pairs["a"])), rt)[head]
    own = mod.evaluate(model, {"val": val}, 1, cfg, rt)[head]
    record = {"key": key, "done": True, "seconds": time.time() - t0, "own_task": own, "other_task": cross,
              "pairs": len(pairs["a"])}
    write_stage(folder, record)
    return record, True


def other_task_pairs(paper, val):
    """The validation pairs in their order (label 0), every other one made the other task's negative (label 1):
    for BERT's NSP head, its two segments swapped (sentence order); for ALBERT's SOP head, its B taken from the
    pair half the split away, another document as a rule, cut to the length it replaces (next sentence)."""
    in_order = np.flatnonzero(val["pair_labels"] == 0)
    a, b = val["a"][in_order].copy(), val["b"][in_order].copy()  # (N, 2) token ranges
    other = np.arange(len(a)) % 2 == 1
    if paper == "bert":
        a[other], b[other] = b[other].copy(), a[other].copy()
    else:
        far = b[np.roll(np.arange(len(b)), len(b) // 2)]
        n = np.minimum(far[:, 1] - far[:, 0], b[:, 1] - b[:, 0])
        b[other] = np.stack([far[:, 0], far[:, 0] + n], 1)[other]
    return {"a": a, "b": b, "pair_labels": other.astype(np.int64)}


def interval(differences, draws=10_000):
    """The mean of paired differences (per dev example, or per seed) and its 95% bootstrap interval: the pairs
    resampled with replacement, the same draws every time. One pair measures no noise, so is never beyond it."""
    d = np.asarray(differences, dtype=np.float64)
    means = d[np.random.default_rng(0).integers(0, len(d), (draws, len(d)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    beyond = len(d) > 1 and (low > 0 or high < 0)
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "beyond_noise": bool(beyond)}


# --- results ---


def memory(paper, cfg):
    """What training one micro-batch of the shape holds, in bytes: `state`, the fp32 weights with their gradients
    and the optimiser's two moments (16 bytes a parameter, Adam's and LAMB's alike), and `activations`, what
    autograd keeps of the encoder's forward for the backward (each storage once, the weights left out), measured on
    two sequences and counted for the micro-batch, so that a base-size shape needs no gigabytes here."""
    torch.manual_seed(0)
    model = importlib.import_module(paper).Model(cfg).train()
    weights, kept = {w.untyped_storage().data_ptr() for w in model.parameters()}, {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    n = min(cfg.batch_size, 2)  # from two sequences on, a batch of B keeps B/2 times as much (one takes other paths)
    ids = torch.randint(5, cfg.vocab_size, (n, cfg.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model.encode(ids, torch.ones_like(ids))
    return {"parameters": model.num_params(), "state": 16 * model.num_params(),
            "activations": cfg.batch_size * sum(kept.values()) // n}


def collect(p, args, out, task, records):
    """results.json: everything the table and the plot show."""
    metric = task["metrics"][0]
    first_dev = next(iter(task["dev"]))
    papers, right = {}, {r["paper"]: records[("probe", r["paper"])]["right"] for r in p["rows"]}
    order = {r["paper"]: records[("probe", r["paper"])]["order"] for r in p["rows"]}
    for r in p["rows"]:
        paper = r["paper"]
        pre, tuned = records[("pretrain", paper)], records[("finetune", paper)]["results"]
        fractions = {fraction_name(a, b): {"steps": steps, "flops": steps * r["flops_per_step"],
                                           "probe": float(np.mean(right[paper][fraction_name(a, b)])),
                                           "order_probe": float(np.mean(order[paper][fraction_name(a, b)])),
                                           "pretraining": pre.get("evaluations", {}).get(str(steps), {})}
                     for (a, b), steps in zip(FRACTIONS, r["kept"])}
        ours, floor = tuned["pretrained"][first_dev][metric], tuned["scratch"][first_dev][metric]
        papers[paper] = {"parameters": r["parameters"], "discriminator": r["discriminator"],
                         "flops_per_step": r["flops_per_step"], "lookup_share": r["lookups"], "steps": r["steps"],
                         "flops": r["flops"], "recipe": tuned["recipe"], "pretraining_seconds": pre["seconds"],
                         "config": dataclasses.asdict(r["config"]), "fractions": fractions,
                         "probe": interval(right[paper]["1"]), "probe_floor": interval(right[paper]["floor"]),
                         "probe_gain": interval(np.subtract(right[paper]["1"], right[paper]["floor"])),
                         "order": interval(order[paper]["1"]), "order_floor": interval(order[paper]["floor"]),
                         "order_gain": interval(np.subtract(order[paper]["1"], order[paper]["floor"])),
                         "finetuned": ours, "finetuned_floor": floor,
                         "finetune_gain": interval(np.subtract(ours["each"], floor["each"])),
                         "test": tuned.get("test", {}).get(metric)}
    versus = {f"{paper} - bert": {"probe": interval(np.subtract(right[paper]["1"], right["bert"]["1"])),
                                  "order": interval(np.subtract(order[paper]["1"], order["bert"]["1"])),
                                  "finetuned": interval(np.subtract(papers[paper]["finetuned"]["each"],
                                                                    papers["bert"]["finetuned"]["each"]))}
              for paper in ("roberta", "albert", "electra") if paper in papers and "bert" in papers}
    cross = {paper: {k: records[("cross", paper)][k] for k in ("own_task", "other_task", "pairs")}
             for paper in ("bert", "albert") if ("cross", paper) in records}
    downsizing = {r["paper"]: memory(r["paper"], r["config"]) for r in p["rows"]
                  if r["paper"] in ("bert", "albert") and {"bert", "albert"} <= set(papers)}
    return {"size": args.size, "budget": p["budget"], "task": task["name"], "metric": metric, "dev_split": first_dev,
            "dev_examples": len(task["dev"][first_dev]), "order_pairs": len(order[p["rows"][0]["paper"]]["1"]),
            "seeds": args.seeds, "shape": SIZES[args.size]["shape"],
            "warmup": WARMUP, "set": args.set or [], "majority": tuned["majority"][first_dev][metric],
            "papers": papers, "versus_bert": versus, "cross_evaluation": cross, "memory": downsizing,
            "reference": [{"model": m, "parameters": n, "flops": f, "glue_dev": g} for m, n, f, g in REFERENCE]}


def signed(i):
    """A difference with its interval, and whether the interval leaves out zero."""
    return (f"{i['mean']:+.3f} [{i['low']:+.3f}, {i['high']:+.3f}]"
            + (" **beyond the noise**" if i["beyond_noise"] else " within the noise"))


def own_metrics(paper, evaluation):
    """The paper's own pretraining metrics of one evaluation, in words."""
    names = {"val_loss": "loss", "val_mlm_acc": "MLM acc", "val_nsp_acc": "NSP acc", "val_sop_acc": "SOP acc",
             "val_auc": "AUC"}
    shown = [k for k in OWN_METRICS[paper] if k in evaluation]  # BERT without NSP has no NSP accuracy
    return ", ".join(f"{names[k]} {evaluation[k]:.3f}" for k in shown) or "-"


def reading(results):
    """The reading of the table, sentence by sentence, from its numbers."""
    lines = []
    for paper, r in results["papers"].items():
        probe, tuned = r["probe_gain"], r["finetune_gain"]
        verdict = {True: "beats", False: "does not beat"}[probe["low"] > 0]
        lines.append(f"- {paper} {verdict} its random-init floor on the probe beyond the noise "
                     f"({probe['mean']:+.3f}, interval {probe['low']:+.3f} to {probe['high']:+.3f}); fine-tuned, "
                     f"{'beyond' if tuned['low'] > 0 else 'not beyond'} the noise ({tuned['mean']:+.3f}, "
                     f"{tuned['low']:+.3f} to {tuned['high']:+.3f}).")
    for paper, r in results["papers"].items():
        i = r["order_gain"]
        lines.append(f"- Word order: {paper} tells the original from the swapped sentence in {r['order']['mean']:.1%} "
                     f"of the pairs, its random init in {r['order_floor']['mean']:.1%}: "
                     f"{'beyond' if i['beyond_noise'] else 'within'} the noise ({i['mean']:+.3f}, {i['low']:+.3f} to "
                     f"{i['high']:+.3f}).")
    for name, v in results["versus_bert"].items():
        a = name.split(" - ")[0]
        for what in ("probe", "finetuned", "order"):
            i = v[what]
            side = ("ahead of" if i["mean"] > 0 else "behind") if i["beyond_noise"] else "level with (within the noise)"
            how = {"probe": "Probed", "finetuned": "Fine-tuned", "order": "On word order"}[what]
            lines.append(f"- {how}, {a} is {side} BERT: {i['mean']:+.3f} ({i['low']:+.3f} to {i['high']:+.3f}).")
    if cross := results.get("cross_evaluation"):
        nsp, sop = cross["bert"], cross["albert"]
        direction = "the paper's direction" if sop["other_task"] > nsp["other_task"] else "not the paper's direction"
        chance = lambda c: (f"beyond chance (50% ± {1.96 * (0.25 / c['pairs']) ** 0.5:.1%} at {c['pairs']} pairs)"
                            if abs(c["other_task"] - 0.5) > 1.96 * (0.25 / c["pairs"]) ** 0.5 else "at chance")
        lines.append(f"- ALBERT Table 5: BERT's NSP head scores {nsp['other_task']:.1%} on sentence-order pairs, "
                     f"{chance(nsp)} ({nsp['own_task']:.1%} on its own task; the paper: 52.0%); ALBERT's SOP head "
                     f"{sop['other_task']:.1%} on next-sentence pairs, {chance(sop)} ({sop['own_task']:.1%} on its "
                     f"own; the paper: 78.9%): {direction}.")
    if m := results.get("memory"):
        b, a = m["bert"], m["albert"]
        lines.append(f"- ALBERT's downsizing: {a['parameters'] / b['parameters']:.0%} of BERT's parameters and of "
                     f"their training state at this shape, {a['activations'] / b['activations']:.0%} of its "
                     "activations: sharing the layers shares their weights, not their work"
                     + (" (ALBERT trains without dropout, §4.8, so keeps no dropout masks)."
                        if results["papers"]["albert"]["config"]["dropout"] < results["papers"]["bert"]["config"]
                        ["dropout"] else "."))
    beaten = sum(r["probe_gain"]["low"] > 0 for r in results["papers"].values())
    ordered = sum(r["order_gain"]["low"] > 0 for r in results["papers"].values())
    lines.append(f"- {beaten} of {len(results['papers'])} papers beat their floor on the probe beyond the noise, "
                 f"{ordered} on word order.")
    return lines


def write_table(results, path):
    """results.md: the settings, our measured tables, their reading, and the papers' numbers beside them."""
    metric = results["metric"]
    s = results["shape"]
    cfgs = {paper: r["config"] for paper, r in results["papers"].items()}
    extras = ([f"ALBERT's embeddings E = {cfgs['albert']['embed']}"] if "albert" in cfgs else []) + (
        [f"ELECTRA's E = {cfgs['electra']['embed']} and generator width "
         f"{round(cfgs['electra']['hidden'] * cfgs['electra']['gen_size'])}"] if "electra" in cfgs else [])
    lines = [f"# {len(cfgs)} objectives at equal pretraining compute ({results['size']} size)", "",
             f"Each paper pretrained from scratch for {results['budget']:.3g} FLOPs (counted as the ELECTRA paper "
             f"counts them). Shape for all: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, "
             f"FFN {s['ffn']}, vocabulary {s['vocab_size']:,}, sequences of {s['seq_len']}, "
             f"batch {s['batch_size'] * s['grad_accum']}" + "".join(f"; {e}" for e in extras) + "."
             + (f" Settings changed: {', '.join(results['set'])}." if results["set"] else ""), "",
             f"Task `{results['task']}`, dev {metric} on {results['dev_examples']} examples; always answering the "
             f"most frequent class: {results['majority']:.3f}. **Probe**: a logistic regression on the frozen "
             "features (final hidden states averaged over the tokens), for every kept checkpoint and for a randomly "
             "initialised model of the same shape (the floor); deterministic. **Fine-tuned**: the paper's recipe "
             f"on the checkpoint of the whole budget and on the floor, median of {results['seeds']} seeds. Gains and "
             "differences are paired (the same dev examples for the probe, the same seeds for fine-tuning), with a "
             "bootstrap 95% interval.", "",
             "| paper | parameters | FLOPs / step (lookups) | steps | pretraining | own metrics, 1/8 → all | "
             + " | ".join(f"probe at {fraction_name(a, b)}" for a, b in FRACTIONS)
             + " | probe, random init | probe gain | fine-tuned | fine-tuned, random init | fine-tuning gain |",
             "|---|---:|---:|---:|---:|---|" + "---:|" * len(FRACTIONS) + "---:|---|---:|---:|---|"]
    for paper, r in results["papers"].items():
        params = f"{r['parameters']:,}" + (f" ({r['discriminator']:,} kept)" if paper == "electra" else "")
        f = list(r["fractions"].values())
        own = f"{own_metrics(paper, f[0]['pretraining'])} → {own_metrics(paper, f[-1]['pretraining'])}"
        lines.append(f"| {paper} | {params} | {r['flops_per_step']:.3g} ({r['lookup_share']:.0%}) | {r['steps']:,} | "
                     f"{r['pretraining_seconds']:.0f} s | {own} | " + " | ".join(f"{x['probe']:.3f}" for x in f)
                     + f" | {r['probe_floor']['mean']:.3f} | {signed(r['probe_gain'])} | "
                     f"{r['finetuned']['median']:.3f} ± {r['finetuned']['spread']:.3f} | "
                     f"{r['finetuned_floor']['median']:.3f} ± {r['finetuned_floor']['spread']:.3f} | "
                     f"{signed(r['finetune_gain'])} |")
    lines += ["", f"Word order: the probe on the difference of two sentences' features, one of the task's sentences "
              f"and the same with two neighbouring words swapped, which is the original ({results['order_pairs']} dev "
              "pairs; chance 0.5):", "",
              "| paper | " + " | ".join(f"at {fraction_name(a, b)}" for a, b in FRACTIONS)
              + " | random init | gain |", "|---|" + "---:|" * (len(FRACTIONS) + 1) + "---|"]
    lines += [f"| {paper} | " + " | ".join(f"{x['order_probe']:.3f}" for x in r["fractions"].values())
              + f" | {r['order_floor']['mean']:.3f} | {signed(r['order_gain'])} |"
              for paper, r in results["papers"].items()]
    if results["versus_bert"]:
        lines += ["", "Against BERT, paired:", "", "| difference | probe | fine-tuned | word order |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {signed(v['probe'])} | {signed(v['finetuned'])} | {signed(v['order'])} |"
                  for name, v in results["versus_bert"].items()]
    if m := results.get("memory"):
        lines += ["", "ALBERT against BERT at this shape (ALBERT §3.1, Table 2): "
                  + "; ".join(f"{paper} {m[paper]['parameters']:,} parameters, {m[paper]['state'] / 1e6:,.1f} MB of "
                              f"weights, gradients and optimiser moments, {m[paper]['activations'] / 1e6:,.1f} MB of "
                              "activations kept for the backward of one batch" for paper in ("bert", "albert"))
                  + " (fp32, the encoder's forward as autograd saves it)."]
    lines += ["", "Reading (written by the run from the numbers above):", ""] + reading(results)
    lines += ["", "Each seed's score, the best seed's test score and the pretraining validation metrics at every "
              "kept step are in results.json. Lookups: the share of the counted FLOPs that are embedding lookups, "
              "counted as one-hot products (as the paper counts them).", "",
              "The papers' own numbers, for reference (ELECTRA Table 1: GLUE dev score, pretraining FLOPs):", "",
              "| model | parameters | pretraining FLOPs | GLUE dev |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['parameters']} | {r['flops']:.1e} | {r['glue_dev']} |"
              for r in results["reference"]]
    path.write_text("\n".join(lines) + "\n")


def plot(results, path):
    """score_vs_flops.png. Left: the probe's dev score against pretraining FLOPs, a line per paper, its random-init
    floor dashed in the same colour, the whole budget's 95% interval as an error bar. Right: each paper's gain over
    its floor, probed, fine-tuned and on word order, with their intervals."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no plot (pip install matplotlib); the table and JSON are written")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    names = list(results["papers"])
    for k, (paper, r) in enumerate(results["papers"].items()):
        x = [f["flops"] for f in r["fractions"].values()]
        line, = left.plot(x, [f["probe"] for f in r["fractions"].values()], "o-", label=paper)
        colour = line.get_color()
        left.errorbar(x[-1], r["probe"]["mean"], yerr=[[r["probe"]["mean"] - r["probe"]["low"]],
                                                       [r["probe"]["high"] - r["probe"]["mean"]]], color=colour,
                      capsize=3)
        left.axhline(r["probe_floor"]["mean"], color=colour, linestyle="--", linewidth=1)
        for offset, what, marker, label in ((-0.2, "probe_gain", "o", "probe"), (0, "finetune_gain", "s", "fine-tuned"),
                                            (0.2, "order_gain", "^", "word-order probe")):
            g = r[what]
            right.errorbar(k + offset, g["mean"], yerr=[[g["mean"] - g["low"]], [g["high"] - g["mean"]]],
                           color=colour, marker=marker, capsize=3, linestyle="none", label=label if k == 0 else None)
    left.axhline(results["majority"], color="grey", linestyle=":", label="majority class")
    left.set_xscale("log")
    left.set_xlabel("pretraining FLOPs")
    left.set_ylabel(f"probe: dev {results['metric']} ({results['task']} task)")
    left.set_title(f"Objectives at equal compute ({results['size']}); dashed: random init")
    left.legend(fontsize=8)
    right.axhline(0, color="grey", linewidth=1)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("gain over the random-init floor")
    right.set_title("whole budget, 95% intervals")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --- the command line ---


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--papers", default=None, help="comma-separated (default: all five; at small, gpt,bert,electra)")
    p.add_argument("--size", default="tiny", help=f"the shape for all: {', '.join(SIZES)} (default: tiny)")
    p.add_argument("--budget", type=float, default=None,
                   help="pretraining FLOPs per paper (default: the size's: "
                        + ", ".join(f"{k} {v['budget']:.3g}" for k, v in SIZES.items()) + ")")
    p.add_argument("--task", default="builtin", help="the downstream task, as finetune.py takes it (default: builtin)")
    p.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds of the last checkpoint and of the "
                   "floor (default: the size's: "
                   + ", ".join(f"{k} {v['seeds']}" for k, v in SIZES.items()) + ")")
    p.add_argument("--data", default=None, help="the pretraining corpus, as the paper scripts take it (default: the "
                                                "docs shipped with Python, written once to OUT/corpus.txt)")
    p.add_argument("--out", default="runs/compare", help="the comparison's folder (default: runs/compare)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto (the default): CUDA, then MPS, then CPU")
    p.add_argument("--set", action="append", metavar="PAPER.FIELD=VALUE",
                   help="change one paper's setting, e.g. electra.gen_size=0.5, electra.disc_weight=20, bert.lr=1e-3 "
                        "(repeatable); its steps follow from the budget")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    return p


def corpus_without(docs, task):
    """The documents without any sentence of the task's examples, in any split: the built-in task's sentences
    (and the word-order pairs made of them) are never pretrained on."""
    examples = task["train"] + [e for split in task["dev"].values() for e in split] + (task.get("test") or [])
    held = {text for a, b, _ in examples for text in (a, b) if text}
    return [d for d in ([s for s in doc if s not in held] for doc in docs) if d]


def pick_device(name):
    """The device as the paper scripts choose it: `auto` is CUDA, then MPS, then the CPU; a named one must exist."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise UserError(f"--device {name}: this machine has none")
    return torch.device(name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    p = plan(args)
    device = torch.device(args.device) if args.dry_run and args.device != "auto" else pick_device(args.device)
    task = finetune.read_task(args.task)  # every input is checked before anything is written
    missing = [item for item in (args.data or "").split(",") if item.strip() and not item.startswith("hf:")
               and not glob.glob(item.strip())]
    if missing:
        raise UserError(f"--data: nothing at {missing[0].strip()}")
    print_plan(p, args, task, device)
    if args.dry_run:
        return 0
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out {out}: the folder is not writable")
    data = args.data
    if data is None:  # one reading of the default corpus for all five, instead of one each
        data = str(out / "corpus.txt")
        if not Path(data).exists():
            docs = corpus_without(importlib.import_module(p["papers"][0]).default_corpus(), task)
            Path(data + ".tmp").write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n")
            os.replace(data + ".tmp", data)

    # a stage is (what, row): pretraining, the probes of its kept checkpoints, fine-tuning its last one
    stages = [(what, r) for what in ("pretrain", "probe", "finetune") for r in p["rows"]]
    both = {"bert", "albert"} <= set(p["papers"]) and all(getattr(r["config"], "next_sentence", True)
                                                          for r in p["rows"])  # BERT with its NSP head
    stages += [("cross", r) for r in p["rows"] if both and r["paper"] in ("bert", "albert")]
    estimate = {(what, r["paper"]): stage_seconds(what, r, p, args, task, device) for what, r in stages}
    timed = {what: [0.0, 0.0] for what in ("pretrain", "probe", "finetune", "cross")}  # measured, estimated
    records, t_start = {}, time.time()
    for i, (what, row) in enumerate(stages, 1):
        paper = row["paper"]
        label = {"pretrain": f"pretraining {paper}: {row['steps']:,} steps, {row['flops']:.3g} FLOPs",
                 "probe": f"probing {paper}'s {len(FRACTIONS)} checkpoints and its random init",
                 "finetune": f"fine-tuning {paper} at the whole budget (step {row['steps']:,}) and its random init, "
                             f"{args.seeds} seed(s) each",
                 "cross": f"scoring {paper}'s {'NSP head on SOP' if paper == 'bert' else 'SOP head on NSP'} pairs "
                          "(ALBERT Table 5)"}[what]
        print(f"[{i}/{len(stages)}] {label} ...", end="", flush=True)
        try:
            if what == "pretrain":
                record, ran = pretrain(row, args, out, data)
            elif what == "probe":
                record, ran = probe_stage(row, args, out, task, device, records[("pretrain", paper)]["key"])
            elif what == "cross":
                record, ran = cross_stage(row, args, out, data, device, records[("pretrain", paper)]["key"])
            else:
                record, ran = fine_tune(row, args, out, records[("pretrain", paper)]["key"])
        except BaseException:
            print(flush=True)  # end the stage's line, so that an error starts its own
            raise
        records[(what, paper)] = record
        if ran:  # how far off the estimates of this kind of stage were, to correct the ones still to come
            timed[what][0] += record["seconds"]
            timed[what][1] += estimate[(what, paper)]
        left = sum(estimate[(w, r["paper"])] * (timed[w][0] / timed[w][1] if timed[w][1] else 1.0)
                   for w, r in stages[i:])
        print(f" {'done in ' + clock(record['seconds']) if ran else 'already done'}; about {clock(left)} left",
              flush=True)

    results = collect(p, args, out, task, records)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(results, out / "results.md")
    plotted = plot(results, out / "score_vs_flops.png")
    print()
    print((out / "results.md").read_text())
    print(f"written in {clock(time.time() - t_start)}: {out / 'results.md'}, {out / 'results.json'}"
          + (f", {out / 'score_vs_flops.png'}" if plotted else ""))
    return 0


def cli(argv=None):
    """main(), with bad input reported as one line on stderr and exit status 2."""
    try:
        return main(argv)
    except (UserError, finetune.UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the stages already finished", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
