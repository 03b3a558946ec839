"""What each diff between two paper scripts is made of: the share of its changed lines that are the
paper (or its release), the checkpoint layout, and ours.

    python docs/diff_shares.py        # the four diffs the walkthroughs teach

A hunk of `diff A B` (the paper parts: nothing below the fence differs) counts as the checkpoint
layout when it lies in the checkpoints section; as ours when one of its changed lines says "ours:"
(the scripts' mark for what is not the paper's: tiny presets, deterministic tokenizer training);
as the paper's when one of its changed lines, or the docstring of the definition it lies in, cites
a paper (§, a table, a figure, an appendix) or its release; else as ours (what this project adds:
FLOP counts, caches, demos, the tools' plumbing). It measures the convention that code which exists
because of the paper says so, in the line or in its definition's docstring.
"""

import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIFFS = [("gpt", "bert"), ("bert", "roberta"), ("bert", "albert"), ("bert", "electra")]
FENCE = "# ===== shared plumbing"
CHECKPOINTS = "# --- checkpoints"
OURS = re.compile(r"\bours[:,]", re.IGNORECASE)  # "ours: ...", the scripts' mark for what is not the paper's
CITES = re.compile(r"§|\bTable \d|\bFigure \d|\bAppendix [A-H]\b|\brelease\b|\breleased\b|fairseq")
KINDS = ("paper", "checkpoint layout", "ours")


def paper_part(name):
    return (ROOT / f"{name}.py").read_text().split(FENCE)[0].splitlines()


def cited(lines):
    """For each line, whether the docstring of the top-level definition around it cites a paper."""
    out = [False] * len(lines)
    for node in ast.parse("\n".join(lines)).body:
        doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else None
        for i in range(node.lineno - 1, node.end_lineno):
            out[i] = bool(doc and CITES.search(doc))
    return out


def hunks(a, b):
    """(kind, changed lines) of each hunk of the diff of two scripts' paper parts."""
    old, new = paper_part(a), paper_part(b)
    starts = [next(i for i, line in enumerate(lines) if line.startswith(CHECKPOINTS)) for lines in (old, new)]
    in_cited = cited(old), cited(new)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new).get_opcodes():
        if tag == "equal":
            continue
        changed = old[i1:i2] + new[j1:j2]
        checkpoints = i1 >= starts[0] and j1 >= starts[1]
        yield kind(changed, checkpoints, any(in_cited[0][i1:i2] + in_cited[1][j1:j2])), changed


def kind(changed, in_checkpoints, in_cited_definition):
    """What a hunk is, from its changed lines, whether it lies in the checkpoints section and whether
    the docstring of the definition around it cites a paper (docs/site.py tags hunks with it too)."""
    if in_checkpoints:
        return "checkpoint layout"
    if any(OURS.search(line) for line in changed):
        return "ours"
    if any(CITES.search(line) for line in changed) or in_cited_definition:
        return "paper"
    return "ours"


def shares(a, b):
    """{kind: changed lines} of one diff."""
    count = dict.fromkeys(KINDS, 0)
    for kind, changed in hunks(a, b):
        count[kind] += len(changed)
    return count


def main():
    print("| diff | changed lines | paper or release | checkpoint layout | ours |")
    print("|---|---:|---:|---:|---:|")
    for a, b in DIFFS:
        count = shares(a, b)
        total = sum(count.values())
        cells = [f"{count[k]} ({count[k] / total:.0%})" for k in KINDS]
        print(f"| `diff {a}.py {b}.py` | {total} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
