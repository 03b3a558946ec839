"""Draw the training curves of one or more runs: loss and validation loss, and each paper's accuracies.

    python electra.py --train && python plot.py runs/electra          # runs/electra/curves.png
    python plot.py runs/bert runs/roberta --x tokens --out bert-vs-roberta.png

Each RUN is a run folder of a paper script (its metrics.jsonl: a line per log interval, validation at each
evaluation). Solid lines are means over a log interval of training batches, dots the validation set.
"""

import argparse
import json
import re
import sys
from pathlib import Path

SCORES = re.compile(r"(.+_acc|auc.*)")  # the accuracies and ROC AUCs the scripts log (ELECTRA's AUC, NSP's accuracy)


class UserError(Exception):
    """Bad input: one line on stderr and exit status 2."""


def read_metrics(run):
    """The records of RUN/metrics.jsonl, in order; a line still being written is left out."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl; train a run there first (python PAPER.py --train --out {run})")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    if not records:
        raise UserError(f"{path} holds no records yet")
    return records


def plot(runs, x="step"):
    """A figure of the runs {name: records}: the losses on the left, the accuracies (if any) on the right."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    scores = sorted({k.removeprefix("val_") for records in runs.values() for r in records for k in r
                     if SCORES.fullmatch(k.removeprefix("val_"))})
    fig, axes = plt.subplots(1, 2 if scores else 1, figsize=(13 if scores else 7, 4.5), squeeze=False)
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for run, records in runs.items():
        for ax, keys in zip(axes[0], (["loss"], scores)):
            for key in keys:
                colour = next(colours)
                for name, style in ((key, "-"), (f"val_{key}", "o--")):
                    points = [(r.get(x, 0), r[name]) for r in records if name in r]
                    if points:
                        ax.plot(*zip(*points), style, color=colour, label=f"{run} {name}", markersize=4,
                                linewidth=1.5 if style == "-" else 1)
    for ax, title in zip(axes[0], ("loss", "accuracy, ROC AUC")):
        ax.set(xlabel="tokens trained on" if x == "tokens" else "optimiser step", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with its metrics.jsonl)")
    p.add_argument("--x", choices=["step", "tokens"], default="step", help="the horizontal axis (default: step)")
    p.add_argument("--out", help="the PNG to write (default: RUN/curves.png of the first RUN)")
    args = p.parse_args(argv)
    runs = {run: read_metrics(run) for run in args.runs}
    if args.x == "tokens" and (older := [run for run, records in runs.items() if "tokens" not in records[-1]]):
        raise UserError(f"{older[0]}: its metrics.jsonl counts no tokens (an older run); plot it against steps")
    try:
        fig = plot(runs, args.x)
    except ImportError:
        raise UserError("plot.py needs matplotlib: pip install matplotlib") from None
    out = Path(args.out or Path(args.runs[0]) / "curves.png")
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e})") from None
    print(f"the curves: {out}")
    return 0


def cli(argv=None):
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
