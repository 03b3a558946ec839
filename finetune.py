"""Fine-tune a paper script's pretrained model on a classification or regression task, with that paper's recipe.

The recipe, the input format and the classifier head live in the paper script's fine-tuning section; this file is
the loop they share: tasks, batching, seeds, evaluation, the baselines and the results.

    python bert.py --train && python finetune.py bert          # the built-in task, from runs/bert/ckpt.pt
    python finetune.py electra --task rte                       # a GLUE task, through the `datasets` library
    python finetune.py roberta --task path/to/SST-2             # GLUE's own train.tsv / dev.tsv
    python finetune.py bert --task path/to/folder               # train / dev (/ test) .tsv, .csv or .jsonl
"""

import argparse
import ast
import contextlib
import csv
import dataclasses
import functools
import hashlib
import importlib
import io
import json
import math
import os
import re
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
# GLUE: which columns hold the texts and the label in the distributed train.tsv / dev.tsv files, and the metrics
GLUE = {
    "cola": {"columns": (3, None, 1), "header": False, "metrics": ["mcc"]},
    "sst2": {"columns": ("sentence", None, "label"), "metrics": ["accuracy"]},
    "mrpc": {"columns": ("#1 String", "#2 String", "Quality"), "metrics": ["f1", "accuracy"]},
    "stsb": {"columns": ("sentence1", "sentence2", "score"), "metrics": ["pearson", "spearman"], "regression": True},
    "qqp": {"columns": ("question1", "question2", "is_duplicate"), "metrics": ["f1", "accuracy"]},
    "mnli": {"columns": ("sentence1", "sentence2", "gold_label"), "metrics": ["accuracy"],
             "dev": ["dev_matched", "dev_mismatched"]},
    "qnli": {"columns": ("question", "sentence", "label"), "metrics": ["accuracy"]},
    "rte": {"columns": ("sentence1", "sentence2", "label"), "metrics": ["accuracy"]},
    "wnli": {"columns": ("sentence1", "sentence2", "label"), "metrics": ["accuracy"]},
}
# the `datasets` library's names of the same columns
HUB_COLUMNS = {"cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
               "stsb": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
               "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
               "wnli": ("sentence1", "sentence2")}
# the built-in task: which standard-library package a sentence of documentation comes from
BUILTIN_PACKAGES = ["asyncio", "email", "importlib", "multiprocessing", "tkinter", "unittest"]
BUILTIN_SIZES = {"train": 100, "dev": 60, "test": 60}  # sentences per class


class UserError(Exception):
    """Bad input: one line on stderr, exit status 2."""


# --- metrics: as GLUE defines them ---


def accuracy(pred, gold):
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred, gold):
    """F1 of the positive class (label 1), as for MRPC and QQP."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp, fp, fn = np.sum((pred == 1) & (gold == 1)), np.sum((pred == 1) & (gold != 1)), np.sum((pred != 1) & (gold == 1))
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def mcc(pred, gold):
    """Matthews correlation of two binary labellings, as for CoLA (0 when a row or column of the table is empty)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float(np.sum(pred & gold)), float(np.sum(~pred & ~gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def pearson(pred, gold):
    pred, gold = np.asarray(pred, float), np.asarray(gold, float)
    a, b = pred - pred.mean(), gold - gold.mean()
    denominator = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denominator) if denominator else 0.0


def ranks(x):
    """Ranks 1..n, tied values sharing the mean of their ranks (as Spearman's coefficient needs)."""
    x = np.asarray(x, float)
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(pred, gold):
    return pearson(ranks(pred), ranks(gold))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


# --- tasks ---


@functools.lru_cache(maxsize=1)  # read once per process: compare.py fine-tunes on it many times
def builtin_task():
    """Which of six standard-library packages a sentence of its docstrings comes from: text every Python ships, with
    labels no pretraining objective sees. Split by module (no dev or test sentence shares a module with training),
    sentences naming the package left out, duplicates across splits removed, at most 100 / 60 / 60 sentences per
    class."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    split = {"train": [], "dev": [], "test": []}
    for label, package in enumerate(BUILTIN_PACKAGES):
        modules = []
        for path in sorted((stdlib / package).glob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            text = "\n\n".join(d for d in map(ast.get_docstring, (n for n in ast.walk(tree) if isinstance(n, kinds)))
                               if d)
            sentences = []
            for paragraph in re.split(r"\n\s*\n", text):
                if paragraph.startswith((" ", ">>>")):
                    continue  # code, not prose
                prose = " ".join(line.strip() for line in paragraph.splitlines())
                sentences += [s for s in re.split(r"(?<=[.!?])\s+", prose)
                              if 5 <= len(s.split()) <= 60 and package not in s.lower()]
            if sentences:
                modules.append(sentences)
        if len(modules) < 3:
            raise UserError(f"the built-in task needs the standard library's {package} package")
        # modules in order of size, each to the split furthest below its share of the class's sentences
        share, got = {"train": 0.6, "dev": 0.2, "test": 0.2}, {"train": [], "dev": [], "test": []}
        for sentences in sorted(modules, key=lambda m: (-len(m), m[0])):
            total = sum(map(len, got.values())) + len(sentences)
            name = min(share, key=lambda s: (len(got[s]) - share[s] * total) / share[s])
            got[name] += sentences
        seen = set()
        for name in ("train", "dev", "test"):
            unique = [s for s in dict.fromkeys(got[name]) if s not in seen]
            seen.update(unique)
            rng = np.random.default_rng(label)  # a fixed sample, the same on every machine with this Python
            picked = rng.permutation(len(unique))[:BUILTIN_SIZES[name]]
            split[name] += [(unique[i], None, label) for i in sorted(picked)]
    return {"name": "builtin", "train": split["train"], "dev": {"dev": split["dev"]}, "test": split["test"],
            "labels": BUILTIN_PACKAGES, "metrics": ["accuracy"], "regression": False}


def read_table(path, header=True):
    """Rows of a .tsv, .csv or .jsonl file: dicts (by column name), or lists without a header."""
    try:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UserError(f"{path}, line {n}: not a JSON object")
                    rows.append(row)
            return rows
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: GLUE's MRPC starts with a byte-order mark
            reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv"
                      else csv.reader(f))
            lines = [line for line in reader if line]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {path} ({e.__class__.__name__})") from None
    if not header:
        return lines
    names = lines[0] if lines else []
    return [dict(zip(names, line)) for line in lines[1:]]


def table_examples(path, columns, header=True):
    """(first text, second text or None, label) of each row; `columns` names or numbers the three columns."""
    rows = read_table(path, header)
    out = []
    for n, row in enumerate(rows, 2 if header else 1):
        try:
            a, b, label = (row[c] if c is not None else None for c in columns)
        except (KeyError, IndexError):
            has = (lambda c: c in row) if isinstance(row, dict) else (lambda c: c < len(row))
            absent = [c for c in columns if c is not None and not has(c)]
            raise UserError(f"{path}, row {n}: no column {absent[0]!r}") from None
        out.append((str(a), None if b is None else str(b), label))
    if not out:
        raise UserError(f"{path} holds no examples")
    return out


def labelled(path, columns):
    """The examples of a test file, or none when it has no labels (a test split is optional)."""
    rows = read_table(path)
    return table_examples(path, columns) if rows and columns[2] in rows[0] else []


def label_space(task, path_of):
    """Turn the labels into class indices, or floats for a regression; a dev label unseen in training is an error."""
    values = [label for _, _, label in task["train"]]
    if task.get("regression") is None:  # generic files: float labels are a regression
        def number(v):
            try:
                return float(v) if not isinstance(v, bool) else None
            except (TypeError, ValueError):
                return None
        floats = [number(v) for v in values]
        task["regression"] = all(f is not None for f in floats) and any(not f.is_integer() for f in floats)
    if task["regression"]:
        def convert(examples, name):
            try:
                out = [(a, b, float(label)) for a, b, label in examples]
            except (TypeError, ValueError):
                raise UserError(f"{path_of(name)}: a regression label is not a number") from None
            if not all(math.isfinite(label) for _, _, label in out):
                raise UserError(f"{path_of(name)}: a regression label is not a finite number")
            return out
        task["labels"] = ["score"]
    else:
        def order(v):  # integers in numeric order, then names in alphabetical order
            whole = v.lstrip("-").isdigit()
            return (not whole, int(v) if whole else 0, v)
        names = sorted({str(v) for v in values}, key=order)
        task["labels"] = names
        index = {name: i for i, name in enumerate(names)}

        def convert(examples, name):
            unknown = sorted({str(label) for _, _, label in examples} - set(index))
            if unknown:
                raise UserError(f"{path_of(name)}: label {unknown[0]!r} does not occur in training")
            return [(a, b, index[str(label)]) for a, b, label in examples]
    task["train"] = convert(task["train"], "train")
    task["dev"] = {name: convert(examples, name) for name, examples in task["dev"].items()}
    task["test"] = convert(task["test"], "test") if task.get("test") else []
    return task


def read_task(spec):
    """The built-in task, a GLUE task by name, a folder of GLUE's own files, or a folder of train / dev files."""
    if spec == "builtin":
        return builtin_task()
    if spec.lower() in GLUE and not Path(spec).exists():
        return hub_task(spec.lower())
    folder = Path(spec)
    if not folder.is_dir():
        raise UserError(f"--task {spec}: not 'builtin', a GLUE task ({', '.join(GLUE)}) or a folder")
    glue_name = folder.name.lower().replace("-", "")
    if glue_name in GLUE and (folder / "train.tsv").exists():
        layout = GLUE[glue_name]
        devs = layout.get("dev", ["dev"])
        for name in ["train", *devs]:
            if not (folder / f"{name}.tsv").exists():
                raise UserError(f"--task {spec}: no {name}.tsv")
        header = layout.get("header", True)
        task = {"name": glue_name, "train": table_examples(folder / "train.tsv", layout["columns"], header),
                "dev": {name: table_examples(folder / f"{name}.tsv", layout["columns"], header) for name in devs},
                "metrics": layout["metrics"], "regression": layout.get("regression", False)}
        return label_space(task, lambda name: folder / f"{name}.tsv")
    files = {}
    for name in ("train", "dev", "test"):
        found = [folder / f"{name}{ext}" for ext in (".tsv", ".csv", ".jsonl") if (folder / f"{name}{ext}").exists()]
        if found:
            files[name] = found[0]
    for name in ("train", "dev"):
        if name not in files:
            raise UserError(f"--task {spec}: no {name}.tsv, {name}.csv or {name}.jsonl")
    first = read_table(files["train"])[:1]
    pair = bool(first) and "sentence1" in first[0]
    columns = ("sentence1", "sentence2", "label") if pair else ("sentence", None, "label")
    task = {"name": folder.name, "train": table_examples(files["train"], columns),
            "dev": {"dev": table_examples(files["dev"], columns)},
            "test": labelled(files["test"], columns) if "test" in files else [], "metrics": None,
            "regression": None}
    task = label_space(task, lambda name: files[name])
    task["metrics"] = ["pearson", "spearman"] if task["regression"] else ["accuracy"]
    return task


def hub_task(name):
    """A GLUE task through the `datasets` library (it downloads GLUE from the Hugging Face hub once)."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"--task {name} needs the `datasets` library (pip install datasets), or pass a folder "
                        "with GLUE's train.tsv and dev.tsv") from None
    try:
        data = datasets.load_dataset("nyu-mll/glue", name)
    except Exception as e:  # no network, or the hub refused
        raise UserError(f"--task {name}: cannot load GLUE from the hub ({e.__class__.__name__}); pass a folder with "
                        "GLUE's train.tsv and dev.tsv instead") from None
    first, second = HUB_COLUMNS[name]
    layout = GLUE[name]

    def examples(split):
        rows = data[split]
        return [(a, b, label) for a, b, label in zip(rows[first], rows[second] if second else [None] * len(rows),
                                                      rows["label"])]
    devs = ["validation_matched", "validation_mismatched"] if name == "mnli" else ["validation"]
    task = {"name": name, "train": examples("train"), "dev": {d: examples(d) for d in devs},
            "metrics": layout["metrics"], "regression": layout.get("regression", False)}
    task = label_space(task, lambda split: f"GLUE {name} {split}")
    names = getattr(data["train"].features["label"], "names", None)
    if names and task["labels"] == [str(i) for i in range(len(names))]:
        task["labels"] = list(names)  # the hub numbers the classes; these are their names, in that order
    return task


# --- batches ---


def encode_task(mod, tokenizer, examples, max_len, regression):
    """The examples as arrays, sorted by length so that a batch pads little: ids and segment ids (N, T_max),
    lengths (N,), labels (N,)."""
    second = [b for _, b, _ in examples] if examples and examples[0][1] is not None else None
    encoded = mod.encode_inputs(tokenizer, [a for a, _, _ in examples], second, max_len)
    lengths = np.array([len(ids) for ids, _ in encoded])
    ids = np.zeros((len(encoded), max(lengths)), np.int64)
    types = np.zeros_like(ids)
    for i, (token_ids, type_ids) in enumerate(encoded):
        ids[i, :len(token_ids)], types[i, :len(type_ids)] = token_ids, type_ids
    labels = np.array([label for _, _, label in examples], np.float32 if regression else np.int64)
    return {"ids": ids, "types": types, "lengths": lengths, "labels": labels}


def groups(data, batch_size, rng=None):
    """The rows of each batch: examples of similar length together (with `rng`: shuffled within lengths, and the
    batches in a random order)."""
    n = len(data["lengths"])
    noise = rng.random(n) if rng is not None else np.zeros(n)
    order = np.lexsort((noise, data["lengths"]))
    rows = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [rows[i] for i in rng.permutation(len(rows))] if rng is not None else rows


def batches(data, batch_size, pad_id, rng=None):
    """The batches of `groups`, each padded to its own longest example."""
    for rows in groups(data, batch_size, rng):
        T = int(data["lengths"][rows].max())
        ids = data["ids"][rows, :T]
        mask = np.arange(T)[None, :] < data["lengths"][rows, None]  # (B, T)
        yield {"input_ids": torch.from_numpy(np.where(mask, ids, pad_id)),
               "attention_mask": torch.from_numpy(mask.astype(np.int64)),
               "token_type_ids": torch.from_numpy(data["types"][rows, :T]),
               "labels": torch.from_numpy(data["labels"][rows])}


# --- training ---


def scores(task, logits, labels):
    """The task's metrics of (N, labels) logits against the labels."""
    pred = logits[:, 0] if task["regression"] else logits.argmax(-1)
    return {m: METRICS[m](pred, labels) for m in task["metrics"]}


@torch.no_grad()
def evaluate(mod, clf, data, recipe, pad_id, rt, task):
    clf.eval()
    logits = []
    for batch in batches(data, 128, pad_id):
        batch = {k: v.to(rt.device) for k, v in batch.items()}
        with rt.amp:
            logits.append(mod.finetune_loss(clf, batch, recipe)[1].float().cpu())
    clf.train()
    order = np.concatenate(groups(data, 128))  # the order the batches took
    out = np.empty((len(order), logits[0].shape[-1]), np.float32)
    out[order] = torch.cat(logits).numpy()
    return scores(task, out, data["labels"])


def fine_tune(mod, clf, task, data, recipe, seed, rt, log, tag):
    """Fine-tune `clf` with `recipe` on the device and in the dtype of `rt` (the paper script's setup_runtime);
    returns the best epoch (its dev scores and weights), loaded into `clf`."""
    clf.to(rt.device).train()
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == "fp16")
    pad_id = clf.pad_id
    opt_cfg = clf.model.cfg
    optimizer = torch.optim.AdamW(mod.finetune_groups(clf, recipe), lr=recipe.lr, betas=tuple(opt_cfg.betas),
                                  eps=opt_cfg.adam_eps, fused=rt.device.type != "mps")
    rng = np.random.default_rng(seed)
    steps = recipe.epochs * math.ceil(len(data["train"]["lengths"]) / recipe.batch_size)
    warmup = max(1, round(recipe.warmup * steps))
    base = [group["lr"] for group in optimizer.param_groups]
    step, best, t0 = 0, None, time.time()
    primary = task["metrics"][0]
    for epoch in range(1, recipe.epochs + 1):
        total, count = 0.0, 0
        for batch in batches(data["train"], recipe.batch_size, pad_id, rng):
            batch = {k: v.to(rt.device) for k, v in batch.items()}
            scale = (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup))
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * scale  # linear warmup, then linear decay to 0
            with rt.amp:
                loss, _ = mod.finetune_loss(clf, batch, recipe)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradient, not the fp16-scaled one
            torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            total, count = total + float(loss.detach()), count + 1
        dev = {name: evaluate(mod, clf, d, recipe, pad_id, rt, task) for name, d in data["dev"].items()}
        first = next(iter(dev.values()))
        record = {"run": tag, "seed": seed, "epoch": epoch, "loss": total / count, **{
            f"{name}_{m}": v for name, s in dev.items() for m, v in s.items()}}
        elapsed = time.time() - t0
        log(record, eta=elapsed / epoch * (recipe.epochs - epoch))
        if best is None or first[primary] > best["dev"][next(iter(dev))][primary]:
            state = {k: v.detach().cpu().clone() for k, v in clf.state_dict().items()}
            best = {"epoch": epoch, "dev": dev, "state": state}
    clf.load_state_dict(best["state"])
    return best, clf


def summary(values):
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "spread": (max(values) - min(values)) / 2, "each": values}


def majority(task):
    """The scores of always answering the most frequent training label (the mean for a regression)."""
    labels = np.array([label for _, _, label in task["train"]])
    guess = labels.mean() if task["regression"] else np.bincount(labels).argmax()
    return {name: scores(task, np.full((len(d), 1), guess, np.float32) if task["regression"]
                         else np.eye(len(task["labels"]), dtype=np.float32)[np.full(len(d), guess)],
                         np.array([label for _, _, label in d]))
            for name, d in task["dev"].items()}


def load_pretrained(mod, args):
    """The pretrained model: --from-pretrained's folder, or the checkpoint --ckpt (runs/PAPER/ckpt.pt)."""
    if args.from_pretrained:
        model = mod.Model.from_pretrained(args.from_pretrained)
        if model.tokenizer is None:
            raise UserError(f"--from-pretrained {args.from_pretrained}: no tokenizer files")
        return model
    ckpt = Path(args.ckpt or f"runs/{args.paper}/ckpt.pt")
    if not ckpt.exists():
        raise UserError(f"no checkpoint at {ckpt}: run `python {args.paper}.py --train` first, or pass --ckpt or "
                        "--from-pretrained")
    return mod.model_from_checkpoint(ckpt)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paper", help=f"which paper script's model: {', '.join(PAPERS)}")
    p.add_argument("--task", default="builtin",
                   help=f"builtin (the default), a GLUE task ({', '.join(GLUE)}), a GLUE folder, or a folder of "
                        "train/dev files")
    p.add_argument("--from-pretrained", default=None, metavar="DIR", help="a Hugging Face-format folder")
    p.add_argument("--ckpt", default=None, help="a checkpoint of `python PAPER.py --train` "
                                                "(default: runs/PAPER/ckpt.pt)")
    p.add_argument("--recipe", default=None, help="paper, or tiny for the tiny preset (default: by the model's size)")
    p.add_argument("--epochs", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="(default: the recipe's)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per example (default: the recipe's)")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning runs with seeds 0, 1, ... (default: 3)")
    p.add_argument("--out", default=None, help="run folder (default: runs/finetune-PAPER-TASK)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto (the default): CUDA, then MPS, then CPU")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto (the default): as the paper scripts choose it")
    p.add_argument("--no-baseline", action="store_true", help="skip the randomly initialised model")
    p.add_argument("--eval-only", action="store_true",
                   help="score the fine-tuned model of --from-pretrained (a sequence-classification folder, such as "
                        "the `model` folder of a run) without training")
    return p


def check(args):
    if args.paper not in PAPERS:
        raise UserError(f"unknown paper {args.paper!r}; choose one of {', '.join(PAPERS)}")
    for name in ("epochs", "lr", "batch_size", "max_len", "seeds"):
        value = getattr(args, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.max_len is not None and args.max_len < 8:
        raise UserError(f"--max-len must leave room for the special tokens and the text: 8 or more, "
                        f"got {args.max_len}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check(args)
    mod = importlib.import_module(args.paper)
    try:
        return run(mod, args)
    except mod.UserError as e:  # the paper script's own bad-input errors
        raise UserError(str(e)) from None


def run(mod, args):
    rt = mod.setup_runtime(args)  # the device and dtype, chosen and checked as the paper script does
    task = read_task(args.task)  # every input is read before anything is written
    if args.eval_only:
        return evaluate_only(mod, args, task, rt)
    pretrained = load_pretrained(mod, args)
    shape = (pretrained.cfg.layers, pretrained.cfg.hidden)  # the preset of this shape, if it has its own recipe
    presets = [p for p, c in mod.PRESETS.items() if (c.layers, c.hidden) == shape and p in mod.RECIPES]
    name = args.recipe or (presets[0] if presets else "paper")
    if name not in mod.RECIPES:
        raise UserError(f"--recipe {name!r}: choose one of {', '.join(mod.RECIPES)}")
    given = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_len": args.max_len}
    recipe = dataclasses.replace(mod.RECIPES[name], **{k: v for k, v in given.items() if v is not None})
    out = Path(args.out or f"runs/finetune-{args.paper}-{task['name']}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make the run folder ({e.strerror})") from None
    print(f"{args.paper}: {task['name']} task, {len(task['train'])} training examples, {len(task['labels'])} "
          f"{'outputs' if task['regression'] else 'classes'}; recipe {name}: {recipe}", flush=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")

    def log(record, eta):
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        print(f"{shown} | eta {eta:.0f}s", flush=True)

    outputs = 1 if task["regression"] else len(task["labels"])

    cfg = dataclasses.replace(pretrained.cfg, dropout=recipe.dropout)  # dropout has no weights: a new value is free

    def run_seeds(tag, make_model):
        results = []
        for seed in range(args.seeds):
            model = make_model(seed)
            model.tokenizer = pretrained.tokenizer
            torch.manual_seed(seed)
            clf = mod.Classifier(model, outputs, recipe)  # adds any special tokens the format needs (GPT-1's)
            max_len = min(recipe.max_len, clf.max_tokens)
            data = {"train": encode_task(mod, clf.model.tokenizer, task["train"], max_len, task["regression"]),
                    "dev": {d: encode_task(mod, clf.model.tokenizer, examples, max_len, task["regression"])
                            for d, examples in task["dev"].items()}}
            best, clf = fine_tune(mod, clf, task, data, recipe, seed, rt, log, tag)
            results.append(best)
        return results

    def from_checkpoint(seed):
        model = mod.Model(cfg)
        model.load_state_dict(pretrained.state_dict())
        return model

    def from_scratch(seed):
        torch.manual_seed(1000 + seed)
        return mod.Model(cfg)

    primary = task["metrics"][0]
    first_dev = next(iter(task["dev"]))
    # what the from-scratch runs depend on: the paper, the task's examples, the recipe, the shape, the tokenizer
    key = hashlib.sha256(json.dumps([args.paper, task["train"], task["dev"], dataclasses.asdict(recipe),
                                     dataclasses.asdict(pretrained.cfg), args.seeds,
                                     pretrained.tokenizer.to_str()]).encode()).hexdigest()[:16]
    rows = {"pretrained": run_seeds("pretrained", from_checkpoint)}
    cache = out / "scratch.json"
    if not args.no_baseline:
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if cached.get("key") == key:
            rows["scratch"] = cached["runs"]
            print("from scratch: the cached runs of", cache)
        else:
            rows["scratch"] = [{k: v for k, v in r.items() if k != "state"}
                               for r in run_seeds("scratch", from_scratch)]
            cache.write_text(json.dumps({"key": key, "runs": rows["scratch"]}))
    results = {"paper": args.paper, "task": task["name"], "recipe": dataclasses.asdict(recipe),
               "metrics": task["metrics"], "majority": majority(task)}
    for tag, runs in rows.items():
        results[tag] = {d: {m: summary([r["dev"][d][m] for r in runs]) for m in task["metrics"]}
                        for d in task["dev"]}
        results[tag]["epochs"] = [r["epoch"] for r in runs]
    best_seed = max(range(len(rows["pretrained"])), key=lambda i: rows["pretrained"][i]["dev"][first_dev][primary])
    best = mod.Model(pretrained.cfg)
    best.tokenizer = pretrained.tokenizer
    clf = mod.Classifier(best, outputs, recipe)
    clf.load_state_dict(rows["pretrained"][best_seed]["state"])
    if task["test"]:  # the dev split chose the epoch and the seed: the test split scores the choice
        data = encode_task(mod, clf.model.tokenizer, task["test"], min(recipe.max_len, clf.max_tokens),
                           task["regression"])
        results["test"] = evaluate(mod, clf.to(rt.device), data, recipe, clf.pad_id, rt, task)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    torch.save({"paper": args.paper, "task": task["name"], "labels": task["labels"], "regression": task["regression"],
                "recipe": dataclasses.asdict(recipe), "config": dataclasses.asdict(clf.model.cfg),
                "seed": best_seed, "model": rows["pretrained"][best_seed]["state"]}, out / "best.pt")
    mod.export_classifier(clf.cpu(), out / "model", task["labels"], task["regression"])
    print(f"\n{args.paper} on {task['name']}, dev {primary} over {args.seeds} seeds (median, mean ± half the range):")
    for tag in rows:
        s = results[tag][first_dev][primary]
        print(f"  {tag:<12} {s['median']:.4f}   {s['mean']:.4f} ± {s['spread']:.4f}   each: "
              + ", ".join(f"{v:.4f}" for v in s["each"]))
    print(f"  {'majority':<12} {results['majority'][first_dev][primary]:.4f}")
    if "test" in results:
        print(f"the best seed on the test split: {primary} {results['test'][primary]:.4f}")
    print(f"results: {out / 'results.json'}; the best seed's model, in the Hugging Face layout: {out / 'model'}")
    return 0


def load_classifier(mod, path):
    """A Hugging Face sequence-classification folder of this paper's model: (Classifier, label names, regression).
    The encoder is read by the paper's own loader, from a copy of the folder without the task head."""
    import tempfile

    try:
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"--from-pretrained {path}: no readable config.json") from None
    hf, sd = mod.read_pretrained(path, model_type)
    prefixes = tuple(theirs + "." for theirs, _ in mod.HF_HEAD)
    head = mod.rename({k: v for k, v in sd.items() if k.startswith(prefixes)}, mod.HF_HEAD)
    id2label = hf.get("id2label") or {}
    count = hf.get("num_labels") or len(id2label) or 2  # as transformers reads a config.json
    regression = hf.get("problem_type") == "regression" or count == 1
    labels = [id2label.get(str(i), id2label.get(i, str(i))) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items() if not k.startswith(prefixes)}, f"{tmp}/model.safetensors")
        (Path(tmp) / "config.json").write_text(json.dumps(dict(hf)))
        for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"):
            if (Path(path) / name).exists():
                (Path(tmp) / name).write_bytes((Path(path) / name).read_bytes())
        with contextlib.redirect_stderr(io.StringIO()):  # the pretraining heads it lacks are no news here
            model = mod.Model.from_pretrained(tmp)
    if model.tokenizer is None:
        raise UserError(f"--from-pretrained {path}: no tokenizer files")
    clf = mod.Classifier(model, len(labels), mod.RECIPES["paper"])
    missing = set(clf.state_dict()) - {f"model.{k}" for k in model.state_dict()} - set(head)
    if missing:
        raise UserError(f"--from-pretrained {path}: no {sorted(missing)[0]!r} in the classification head")
    clf.load_state_dict({**{f"model.{k}": v for k, v in model.state_dict().items()}, **head})
    return clf, labels, regression


def evaluate_only(mod, args, task, rt):
    """Score a fine-tuned model, a Hugging Face sequence-classification folder (such as the `model` folder this
    driver writes), on the task's dev split(s)."""
    if not args.from_pretrained:
        raise UserError("--eval-only needs --from-pretrained: a sequence-classification folder, such as "
                        "runs/finetune-PAPER-TASK/model")
    clf, labels, regression = load_classifier(mod, args.from_pretrained)
    if regression != task["regression"] or (not regression and len(labels) != len(task["labels"])):
        raise UserError(f"the model has {len(labels)} outputs, the task {len(task['labels'])}")
    generic = all(re.fullmatch(r"(LABEL_)?\d+", name) for name in labels)
    if not regression and not generic:  # classes matched by name, whatever order the model learned them in
        if sorted(labels) != sorted(task["labels"]):
            raise UserError(f"the model's labels {labels} are not the task's {task['labels']}")
        order = torch.tensor([labels.index(name) for name in task["labels"]])
        with torch.no_grad():
            clf.out.weight.copy_(clf.out.weight[order])
            if clf.out.bias is not None:
                clf.out.bias.copy_(clf.out.bias[order])
    recipe = mod.RECIPES["paper"]
    max_len = min(args.max_len or recipe.max_len, clf.max_tokens)
    clf.to(rt.device)
    dev = {}
    for name, examples in task["dev"].items():
        data = encode_task(mod, clf.model.tokenizer, examples, max_len, task["regression"])
        dev[name] = evaluate(mod, clf, data, recipe, clf.pad_id, rt, task)
    for name, s in dev.items():
        print(f"{args.paper} on {task['name']} {name}: " + ", ".join(f"{m} {v:.4f}" for m, v in s.items()))
    return 0


def cli(argv=None):
    """main(), with bad input reported as one line on stderr and exit status 2, Ctrl-C as one line and 130."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # as the paper scripts: one line, the shell's exit status for Ctrl-C
        print("interrupted: the epochs so far are in the run folder's metrics.jsonl; the results and the model "
              "are written at the end", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
