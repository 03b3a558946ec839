"""The teaching site: the four diffs side by side and the five scripts, generated from the scripts,
so it can never disagree with them.

    python docs/site.py                       # writes site/ and prints the path of its index.html
    python docs/site.py --out DIR             # elsewhere
    python docs/site.py --run-dir runs/electra  # ELECTRA's drawing from a trained run's generator

Static HTML that reads from a file:// URL, with no script, CDN or web font. Pages:
- index.html: the five papers, the four diffs (changed lines, what they are made of), the scripts;
- diff-A-B.html: the paper parts of A and B side by side, top-level definitions aligned by name
  (one only A or only B has is shown removed or added whole), then lines within each definition;
  changed regions with three lines of context, grouped by the scripts' sections, each section led
  by its paragraph of the walkthrough (docs/diff-*.md, docs/gpt-and-bert.md); every hunk tagged with
  the citations on its changed lines and its kind (docs/diff_shares.py), checkpoint hunks folded;
- SCRIPT.html: the paper part, highlighted, citations in the margin, every definition anchored
  (#mask_tokens), and one training example made by the script's own get_batch, drawn as tokens.
Nothing below the fence appears: the plumbing is one line that counts it.
"""

import argparse
import ast
import contextlib
import difflib
import functools
import html
import importlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]  # the scripts (for the drawn examples), diff_shares
import diff_shares  # noqa: E402

SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]
DIFFS = diff_shares.DIFFS
WALKTHROUGHS = {("gpt", "bert"): "docs/gpt-and-bert.md", ("bert", "roberta"): "docs/diff-bert-roberta.md",
                ("bert", "albert"): "docs/diff-bert-albert.md", ("bert", "electra"): "docs/diff-bert-electra.md"}
# every external link of the site: each script's paper (the version its docstring pins) and release
PAPERS = {
    "gpt": ("GPT-1", "https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf",
            "https://github.com/openai/finetune-transformer-lm"),
    "bert": ("BERT", "https://arxiv.org/abs/1810.04805v2", "https://github.com/google-research/bert"),
    "roberta": ("RoBERTa", "https://arxiv.org/abs/1907.11692v1", "https://github.com/facebookresearch/fairseq"),
    "albert": ("ALBERT", "https://arxiv.org/abs/1909.11942v6", "https://github.com/google-research/albert"),
    "electra": ("ELECTRA", "https://arxiv.org/abs/2003.10555v1", "https://github.com/google-research/electra"),
}
SCRIPT_OF = {paper: script for script, (paper, _, _) in PAPERS.items()}
SECTIONS = {"docstring": "Docstring and imports", "config": "Config", "model": "Model",
            "objective": "Objective", "tokenizer": "Tokenizer", "fine-tuning": "Fine-tuning",
            "demo": "Demo", "checkpoints": "Checkpoints: the Hugging Face layout"}
SECTION = re.compile(r"# --- ([\w-]+)")
# a walkthrough's numbered item opens with its section in bold: "3. **Model (§3.1).**"
ITEM_SECTION = {"Docstring": "docstring", "Config": "config", "Model": "model", "Objective": "objective",
                "Optimiser": "objective", "Tokenizer": "tokenizer", "Fine-tuning": "fine-tuning",
                "Demo": "demo", "Checkpoints": "checkpoints"}
# citations as the scripts write them: a paper's name (else the file's own), then §, tables, figures
ID = r"(?:[A-H](?:\.\d+)*|\d+(?:\.\d+)*)"
CITATION = re.compile(r"(?:\b(GPT-1|BERT|RoBERTa|ALBERT|ELECTRA) )?((?:§ ?" + ID + r"|(?:Table|Figure) \d+|"
                      r"Appendix [A-H])(?:(?:, | and )(?:§ ?" + ID + r"|(?:Table|Figure) \d+|[A-H]\.\d+))*)")
CONTEXT = 3  # lines around a change


# --- reading the scripts ---


@functools.cache  # every page reads the scripts: once each
def paper_part(script):
    """The script's lines above the fence (what differs between scripts; the plumbing never does)."""
    return tuple(diff_shares.paper_part(script))


@dataclass
class Unit:
    """A top-level definition of a paper part, with the comments above it: lines start..end
    (1-based, inclusive) in its section."""
    name: str
    section: str
    start: int
    end: int
    cites: bool = False  # its docstring cites a paper or a release


def units(script):
    """The paper part's top-level definitions in order; every line that is not blank or a section
    marker belongs to exactly one (a comment block to the definition below it)."""
    lines = paper_part(script)
    section, prev_end, out, seen = "docstring", 0, [], set()
    for node in ast.parse("\n".join(lines)).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        for i in range(prev_end, start - 1):  # the section markers since the last definition
            if m := SECTION.match(lines[i]):
                section, prev_end = m.group(1), i + 1
        first = next(i for i in range(prev_end, start) if lines[i].strip()) + 1
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            name = "imports"
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            name = "docstring"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            name = ", ".join(ast.unparse(t) for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
        else:
            name = ast.unparse(node).splitlines()[0][:40]
        if out and name == "imports" == out[-1].name:  # consecutive imports are one unit
            out[-1].end = node.end_lineno
        else:
            doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else None
            while name in seen:
                name += "'"
            seen.add(name)
            out.append(Unit(name, section, first, node.end_lineno, bool(doc and diff_shares.CITES.search(doc))))
        prev_end = node.end_lineno
    return out


def citations(line, script):
    """(paper, citation) of each citation on a line: a bare one is the script's own paper's."""
    for m in CITATION.finditer(line):
        paper = m.group(1) or PAPERS[script][0]
        for one in re.split(r", | and ", m.group(2)):
            yield paper, one


def about(script):
    """Title, authors and year, read off the script's docstring."""
    doc = ast.get_docstring(ast.parse((ROOT / f"{script}.py").read_text())).split("\n\n")[0]
    m = re.match(r"(.+?) \((.+?)[;,] (?:OpenAI, )?(\d{4})", " ".join(doc.split()))
    return m.group(1), m.group(2), m.group(3)


@functools.cache
def highlighted(script):
    """The paper part's lines as highlighted HTML, one string a line."""
    text = "\n".join(paper_part(script)) + "\n"
    return highlight(text, PythonLexer(), HtmlFormatter(nowrap=True)).split("\n")


# --- the aligned diff ---


@dataclass
class Hunk:
    rows: list  # (kind, a line or None, b line or None); kind: "ctx", "chg"
    kinds: dict = field(default_factory=dict)  # {kind: changed lines}: each run of changes classified
    cites: list = field(default_factory=list)  # (paper, citation), in order, once each


@dataclass
class Entry:
    """A definition of either script: the same in both, changed (its hunks), added or removed."""
    name: str
    section: str
    a: Unit = None
    b: Unit = None
    hunks: list = field(default_factory=list)


def aligned(a, b):
    """The diff of two paper parts, definition by definition: entries in b's order, each of a's own
    definitions after the definition it follows in a."""
    la, lb = paper_part(a), paper_part(b)
    ua, ub = {u.name: u for u in units(a)}, {u.name: u for u in units(b)}
    entries = [Entry(u.name, u.section, ua.get(u.name), u) for u in ub.values()]
    after = None
    for u in ua.values():
        if u.name in ub:
            after = u.name
            continue
        at = 0 if after is None else next(i for i, e in enumerate(entries) if e.name == after) + 1
        while at < len(entries) and entries[at].b is None:  # after a's own ones placed before it
            at += 1
        entries.insert(at, Entry(u.name, u.section, u, None))
        after = u.name
    for e in entries:
        old = la[e.a.start - 1:e.a.end] if e.a else ()
        new = lb[e.b.start - 1:e.b.end] if e.b else ()
        o0, n0 = (e.a.start if e.a else 0), (e.b.start if e.b else 0)
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for group in matcher.get_grouped_opcodes(CONTEXT):
            hunk = Hunk([])
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    hunk.rows += [("ctx", o0 + i, n0 + j) for i, j in zip(range(i1, i2), range(j1, j2))]
                    continue
                hunk.rows += [("chg", None if i is None else o0 + i, None if j is None else n0 + j)
                              for i, j in zip_longest(range(i1, i2), range(j1, j2))]
                kind = run_kind(old[i1:i2], new[j1:j2], e)
                hunk.kinds[kind] = hunk.kinds.get(kind, 0) + i2 - i1 + j2 - j1
                hunk.cites += [c for line in old[i1:i2] for c in citations(line, a)]
                hunk.cites += [c for line in new[j1:j2] for c in citations(line, b)]
            hunk.kinds = {k: hunk.kinds[k] for k in KINDS if k in hunk.kinds}
            hunk.cites = list(dict.fromkeys(hunk.cites))
            e.hunks.append(hunk)
    return entries


KINDS = ("paper", "release", "checkpoint layout", "ours")


def run_kind(old, new, entry):
    """What a run of changed lines is: docs/diff_shares.py's rule, its "paper" split into the paper
    (a citation) and its release (the release named, no citation)."""
    units_ = [u for u in (entry.a, entry.b) if u]
    kind = diff_shares.kind(old + new, all(u.section == "checkpoints" for u in units_),
                            any(u.cites for u in units_))
    if kind == "paper" and not any(CITATION.search(line) for line in old + new) and any(
            re.search(r"\brelease|fairseq", line) for line in old + new):
        return "release"
    return kind


# --- the walkthroughs: Markdown, a subset ---


def slug(heading):
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def inline(text, link):
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`|\*\*(.+?)\*\*|\*(.+?)\*|!?\[([^\]]+)\]\(([^)]+)\)", text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1), quote=False)}</code>")
        elif m.group(2) is not None:
            out.append(f"<strong>{inline(m.group(2), link)}</strong>")
        elif m.group(3) is not None:
            out.append(f"<em>{inline(m.group(3), link)}</em>")
        else:
            out.append(f'<a href="{html.escape(link(m.group(5)))}">{inline(m.group(4), link)}</a>')
        pos = m.end()
    return "".join(out) + html.escape(text[pos:], quote=False)


def markdown(text, link):
    """Paragraphs, headings (# -> h2), lists (nested by indent), fenced code and inline marks."""
    out, para, stack = [], [], []  # stack: (indent, "ul"/"ol") of the open lists

    def flush():
        if para:
            out.append(f"<p>{inline(' '.join(para), link)}</p>")
            para.clear()

    def close(to=-1):
        while stack and stack[-1][0] > to:
            out.append(f"</li></{stack.pop()[1]}>")

    lines, i = text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        item = re.match(r"( *)(\d+\.|-) (.*)", line)
        if line.startswith("```"):
            flush(), close()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out.append(f"<pre>{html.escape(chr(10).join(lines[i + 1:end]), quote=False)}</pre>")
            i = end
        elif m := re.match(r"(#+) (.*)", line):
            flush(), close()
            level = min(6, len(m.group(1)) + 1)
            out.append(f'<h{level} id="{slug(m.group(2))}">{inline(m.group(2), link)}</h{level}>')
        elif item:
            flush()
            indent, kind = len(item.group(1)), "ol" if item.group(2)[0].isdigit() else "ul"
            close(indent)
            if stack and stack[-1][0] == indent:
                out.append("</li><li>")
            else:
                stack.append((indent, kind))
                out.append(f"<{kind}><li>")
            para.append(item.group(3))
        elif not line.strip():
            flush()
            if i + 1 < len(lines) and not re.match(r" *(\d+\.|-) ", lines[i + 1]):
                close()
        else:
            if stack and not line.startswith(" "):
                flush(), close()
            para.append(line.strip())
        i += 1
    flush(), close()
    return "\n".join(out)


def walkthrough(pair):
    """The walkthrough's Markdown as (before its numbered list, {section: [item]}, after it)."""
    text = (ROOT / WALKTHROUGHS[pair]).read_text()
    lines = text.splitlines()
    items = [i for i, line in enumerate(lines) if re.match(r"\d+\. \*\*", line)]
    end = items[-1] + 1
    while end < len(lines) and (lines[end].startswith(" ") or lines[end].strip()):
        end += 1
    sections = {}
    for i, j in zip(items, items[1:] + [end]):
        word = re.match(r"\d+\. \*\*([\w-]+)", lines[i]).group(1)
        sections.setdefault(ITEM_SECTION[word], []).append("\n".join(lines[i:j]).rstrip())
    start = 1 if lines[0].startswith("# ") else 0  # the page has its own title
    return "\n".join(lines[start:items[0]]), sections, "\n".join(lines[end:])


# --- the objectives, drawn from each script's get_batch ---


@functools.cache  # roberta's page draws bert's data too
def prepared(script, folder, run_dir=None):
    """The script's settings, tokenizer and training data on the default corpus, prepared in
    `folder` as `--train` prepares a run folder (made once, then read back): its tiny preset's, or
    a trained run's own (its checkpoint's settings and tokenizer), with the checkpoint (or None)."""
    module = importlib.import_module(script)
    Path(folder).mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # the scripts' progress lines
        corpus, state = module.read_corpus(None), None
        if run_dir:
            state = module.load_checkpoint(Path(run_dir) / "ckpt.pt")
            cfg, tokenizer = module.Config(**state["config"]), state["tokenizer"]
        else:
            cfg = module.PRESETS["tiny"]
            tokenizer = module.get_tokenizer(folder, corpus, cfg)
        return module, cfg, tokenizer, module.load_data(corpus, tokenizer, folder, cfg)["train"], state


def same_instance_twice(module, data, seed, key):
    """Example 0 and the example that feeds the same instance in epoch 1."""
    n = len(data[key])
    first = module.epoch_order(n, seed, 0)[0]
    return [0, n + int(list(module.epoch_order(n, seed, 1)).index(first))]


def fates(batch, row, mask_id):
    """Each position's original token and what masking made of it: "", mask, random or kept."""
    ids = batch["input_ids"][row].tolist()
    original, fate = list(ids), [""] * len(ids)
    for p, label in zip(batch["mlm_positions"][row].tolist(), batch["mlm_labels"][row].tolist()):
        if label != -100:
            original[p] = label
            fate[p] = "mask" if ids[p] == mask_id else "kept" if ids[p] == label else "random"
    return original, fate


def example(script, folder, seed=0, run_dir=None):
    """One training example of the script, as the page draws it: {"rows": [...], ...}. A row is
    {"title", "example", "tokens": [dict per position]}; the test rebuilds each from get_batch."""
    module, cfg, tok, data, state = prepared(script, folder / script, run_dir)
    word = tok.id_to_token
    if script == "gpt":
        batch = module.get_batch(data, [0], seed, cfg)
        ids, targets = batch["input_ids"][0].tolist(), batch["targets"][0].tolist()
        return {"rows": [{"title": "example 0: each position predicts the next token", "example": 0,
                          "tokens": [{"id": i, "text": word(i), "target": t, "target_text": word(t)}
                                     for i, t in list(zip(ids, targets))[:32]]}],
                "note": f"the first 32 of its {cfg.seq_len} positions"}
    if script in ("bert", "albert"):
        batch = module.get_batch(data, [0], seed, cfg)
        pair = int(batch["pair_labels"][0])
        return {"rows": [masked_row(batch, 0, data, word, "example 0", 0, segments=True, spans=script == "albert")],
                "pair": pair, "pair_text": (["B follows A (label 0)", "B is from another document (label 1)"]
                                            if script == "bert" else
                                            ["A and B in order (label 0)", "A and B swapped (label 1)"])[pair]}
    if script == "roberta":
        ids = same_instance_twice(module, data, seed, "rows")
        batch = module.get_batch(data, ids, seed, cfg)
        bert, bert_cfg, bert_tok, bert_data, _ = prepared("bert", folder / "bert")
        bert_ids = same_instance_twice(bert, bert_data, seed, "pair_labels")
        bert_batch = bert.get_batch(bert_data, bert_ids, seed, bert_cfg)
        return {"rows": [masked_row(batch, r, data, word, f"roberta.py, epoch {r} (example {i})", i)
                         for r, i in enumerate(ids)],
                "static": [masked_row(bert_batch, r, bert_data, bert_tok.id_to_token,
                                      f"bert.py, epoch {r} (example {i})", i, segments=True)
                           | {"script": "bert"} for r, i in enumerate(bert_ids)]}
    # electra: the generator samples at the masked positions, the discriminator's labels
    import torch

    batch = module.get_batch(data, [0], seed, cfg)
    torch.manual_seed(seed)
    model = module.Model(cfg)
    source = f"an untrained generator (weights of seed {seed})"
    if state:  # a trained run's weights, on data made with its own tokenizer and settings
        model.load_state_dict(state["model"])
        source = f"the generator of {run_dir}, at step {state['step']}"
    model.eval()
    sampled, plain = {}, module.sample_replacements

    def keep(*args):  # what forward samples, as it samples it
        sampled["ids"], sampled["replaced"] = plain(*args)
        return sampled["ids"], sampled["replaced"]

    module.sample_replacements = keep
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                  batch["mlm_positions"], batch["mlm_labels"])
    finally:
        module.sample_replacements = plain
    row = masked_row(batch, 0, data, word, "example 0", 0, segments=True)
    for t, s, r in zip(row["tokens"], sampled["ids"][0].tolist(), sampled["replaced"][0].tolist()):
        t.update(sample=s, sample_text=word(s), replaced=int(r))
    return {"rows": [row], "source": source}


def masked_row(batch, r, data, word, title, example_id, segments=False, spans=False):
    original, fate = fates(batch, r, data["mask_id"])
    real = batch["attention_mask"][r].tolist()
    tokens = []
    span, last = 0, None
    for p, (i, o, f) in enumerate(zip(batch["input_ids"][r].tolist(), original, fate)):
        if not real[p]:
            continue
        t = {"id": i, "text": word(i), "original": o, "original_text": word(o), "fate": f}
        if segments:
            t["segment"] = int(batch["token_type_ids"][r][p])
        if spans and f:
            span += last != p - 1
            t["span"], last = span, p
        tokens.append(t)
    return {"title": title, "example": example_id, "tokens": tokens,
            "padding": len(real) - sum(real)}


# --- HTML ---


CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; padding: 0 1.5rem 4rem; max-width: 100rem;
       color: #1d1d1f; background: #fff; }
nav.top { padding: .6rem 0; border-bottom: 1px solid #ddd; margin-bottom: 1rem; }
nav.top a { margin-right: 1rem; }
a { color: #0b57d0; }
h1 { font-size: 1.6rem; margin: .8rem 0 .4rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eee; }
code, pre, .code, table.diff td, table.src td { font-family: ui-monospace, Menlo, Consolas, monospace; }
code { font-size: .9em; background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: 13px; }
.prose { max-width: 52rem; }
table.list { border-collapse: collapse; margin: .5rem 0 1rem; }
table.list td, table.list th { border-bottom: 1px solid #e5e5e5; padding: .25rem .7rem .25rem 0; text-align: left;
       vertical-align: top; }
table.list td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hunk { margin: .8rem 0 1.2rem; border: 1px solid #d8d8d8; border-radius: 4px; break-inside: avoid; }
.hunk > summary { padding: .3rem .5rem; background: #f7f7f9; cursor: pointer; font-size: 13px; }
.pn { float: right; }
.pn a { margin-left: .6rem; }
.tag { display: inline-block; padding: 0 .4rem; margin: 0 .15rem; border-radius: 3px; font-size: 12px;
       background: #eef; color: #1a237e; text-decoration: none; }
.tag.paper { background: #e3f4e8; color: #14532d; }
.tag.release { background: #e6f0fb; color: #0b3d91; }
.tag.ckpt { background: #f1ecf9; color: #4a2a7a; }
.tag.ours { background: #fdf3e1; color: #7a4a00; }
table.diff { width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 12px; line-height: 1.35; }
table.diff col.n { width: 3.2em; }
table.diff td { padding: 0 .35rem; vertical-align: top; white-space: pre-wrap; overflow-wrap: anywhere; }
table.diff td.n { color: #888; text-align: right; user-select: none; }
td.del { background: #ffecec; }
td.ins { background: #e6ffec; }
td.none { background: #fafafa; }
.unit-title { font-size: 1rem; margin: 1.2rem 0 .2rem; font-family: ui-monospace, Menlo, Consolas, monospace; }
.same { font-size: 13px; color: #555; }
.same code { background: none; }
table.src { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 13px; line-height: 1.4; }
table.src col.n { width: 3.5em; }
table.src col.note { width: 14rem; }
table.src td { padding: 0 .4rem; vertical-align: top; white-space: pre-wrap; overflow-wrap: anywhere; }
table.src td.n a { color: #999; text-decoration: none; }
table.src td.n { text-align: right; }
table.src td.note { font-family: system-ui, sans-serif; white-space: normal; }
.fence { margin: 1rem 0; padding: .6rem; border: 1px dashed #aaa; color: #444; }
.toc { columns: 3 16rem; font-size: 14px; }
.toc ul { margin: 0 0 .6rem; padding-left: 1.1rem; break-inside: avoid; }
.chips { display: flex; flex-wrap: wrap; gap: 3px; margin: .3rem 0 1rem; }
.chip { display: inline-flex; flex-direction: column; align-items: center; border: 1px solid #ccc;
        border-radius: 4px; padding: 1px 4px; font: 12px ui-monospace, Menlo, Consolas, monospace; }
.chip .under { font-size: 10px; color: #555; }
.chip.seg1 { border-color: #7aa7d8; background: #f0f6fd; }
.chip.mask { background: #ffe8a8; }
.chip.random { background: #ffd0d0; }
.chip.kept { background: #d9f2d9; }
.chip.replaced { outline: 2px solid #c62828; }
.chip.span-start { margin-left: 6px; }
.legend span { margin-right: .8rem; }
@media (max-width: 900px) {
  table.diff, table.diff tbody, table.diff colgroup { display: block; }
  table.diff tr { display: grid; grid-template-columns: 3.2em 1fr; }
  table.diff tr.ctx td.a, table.diff tr.ctx td.na, table.diff td.none { display: none; }
  table.src col.note { width: 6rem; }
}
@media print {
  nav, .pn { display: none; }
  body { max-width: none; padding: 0; font-size: 11px; }
  .hunk, .chips, tr { break-inside: avoid; }
  table.diff { font-size: 9px; }
  a { color: inherit; }
}
"""


def esc(text):
    return html.escape(str(text))


def page(title, body, out, name):
    nav = " ".join(['<a href="index.html">Index</a>']
                   + [f'<a href="diff-{a}-{b}.html">{a}→{b}</a>' for a, b in DIFFS]
                   + [f'<a href="{s}.html">{s}.py</a>' for s in SCRIPTS])
    text = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(title)}</title>\n<link rel="stylesheet" href="style.css">\n</head>\n<body>\n'
            f'<nav class="top">{nav}</nav>\n{body}\n</body>\n</html>\n')
    (out / name).write_text(text)


def repo_link(out, target):
    """A link from the site to a file of the repository (a walkthrough's other pages)."""
    path, _, anchor = target.partition("#")
    walk = {v: k for k, v in WALKTHROUGHS.items()}.get(path)
    if walk:
        return f"diff-{walk[0]}-{walk[1]}.html" + (f"#{anchor}" if anchor else "")
    rel = os.path.relpath(ROOT / path, out).replace(os.sep, "/")
    return rel + (f"#{anchor}" if anchor else "")


def md_linker(out, source):
    """How a walkthrough's links are written on the site: other walkthroughs are diff pages, the
    rest are files of the repository, and a bare anchor stays on the page."""
    base = Path(source).parent

    def link(url):
        if url.startswith(("http://", "https://", "#")):  # another site, or this page
            return url
        path, _, anchor = url.partition("#")
        target = os.path.normpath(base / path).replace(os.sep, "/")
        return repo_link(out, target + (f"#{anchor}" if anchor else ""))
    return link


def cite_tags(cites):
    return "".join(f'<a class="tag" href="{PAPERS[SCRIPT_OF[paper]][1]}">{esc(paper)} {esc(c)}</a>'
                   for paper, c in cites)


KIND_CLASS = {"paper": "paper", "release": "release", "checkpoint layout": "ckpt", "ours": "ours"}


def diff_page(a, b, out):
    entries = aligned(a, b)
    ha, hb = highlighted(a), highlighted(b)
    before, prose, after = walkthrough((a, b))
    link = md_linker(out, WALKTHROUGHS[(a, b)])
    hunks = [h for e in entries for h in e.hunks]
    shares = {k: sum(h.kinds.get(k, 0) for h in hunks) for k in KINDS}
    changed = sum(shares.values())
    name_a, name_b = PAPERS[a][0], PAPERS[b][0]
    body = [f"<h1>What {esc(name_b)} changed: <code>{a}.py</code> → <code>{b}.py</code></h1>",
            f'<p>{changed} changed lines in {len(hunks)} hunks, aligned by definition: '
            + ", ".join(f'<span class="tag {KIND_CLASS[k]}">{k}</span> {n}' for k, n in shares.items())
            + f'. Left: <a href="{a}.html">{a}.py</a>; right: <a href="{b}.html">{b}.py</a>. '
            f'Only the paper parts differ: the plumbing below the fence is the same in both '
            f'(<a href="{repo_link(out, "docs/layout.md")}">layout</a>).</p>',
            f'<div class="prose">{markdown(before, link)}</div>']
    n = 0
    for section, title in SECTIONS.items():
        here = [e for e in entries if e.section == section]
        if not here:
            continue
        body.append(f'<section id="s-{section}"><h2>{esc(title)}</h2>')
        for item in prose.get(section, []):
            body.append(f'<div class="prose">{markdown(item, link)}</div>')
        for e in here:
            if not e.hunks:
                continue
            ra = f"{e.a.start}-{e.a.end}" if e.a else ""
            rb = f"{e.b.start}-{e.b.end}" if e.b else ""
            state = "" if e.a and e.b else " (removed)" if e.a else f" (new in {b}.py)"
            body.append(f'<div class="unit" data-name="{esc(e.name)}" data-a="{ra}" data-b="{rb}">'
                        f'<h3 class="unit-title" id="d-{esc(e.name)}">{esc(e.name)}{state}</h3>')
            for h in e.hunks:
                n += 1
                pn = (f'<span class="pn">' + (f'<a href="#h{n - 1}">previous</a>' if n > 1 else "")
                      + (f'<a href="#h{n + 1}">next</a>' if n < len(hunks) else "") + "</span>")
                tags = "".join(f'<span class="tag {KIND_CLASS[k]}" data-lines="{n}">{k}</span>'
                               for k, n in h.kinds.items()) + cite_tags(h.cites)
                opened = "" if list(h.kinds) == ["checkpoint layout"] else " open"
                rows = []
                for kind, i, j in h.rows:
                    left = (f'<td class="n na">{i}</td><td class="a {"del" if kind == "chg" else "ctx"}" '
                            f'data-line="{i}">{ha[i - 1]}</td>' if i else '<td class="n none"></td><td class="a none"></td>')
                    right = (f'<td class="n nb">{j}</td><td class="b {"ins" if kind == "chg" else "ctx"}" '
                             f'data-line="{j}">{hb[j - 1]}</td>' if j else '<td class="n none"></td><td class="b none"></td>')
                    rows.append(f'<tr class="{kind}">{left}{right}</tr>')
                body.append(f'<details class="hunk" id="h{n}"{opened}><summary>{tags}{pn}</summary>'
                            '<table class="diff"><colgroup><col class="n"><col><col class="n"><col></colgroup>'
                            + "".join(rows) + "</table></details>")
            body.append("</div>")
        same = [e for e in here if not e.hunks]
        if same:
            body.append('<p class="same">Unchanged: ' + ", ".join(
                f'<code class="same-unit" data-name="{esc(e.name)}" data-a="{e.a.start}-{e.a.end}" '
                f'data-b="{e.b.start}-{e.b.end}">{esc(e.name)}</code>' for e in same) + ".</p>")
        body.append("</section>")
    body.append(f'<div class="prose">{markdown(after, link)}</div>')
    page(f"{a}.py → {b}.py", "\n".join(body), out, f"diff-{a}-{b}.html")
    return changed, shares


def chip(t, under, classes=()):
    attrs = " ".join(f'data-{k}="{esc(v)}"' for k, v in t.items() if not k.endswith("text"))
    return (f'<span class="{" ".join(["chip", *classes])}" {attrs}>{esc(t["text"])}'
            f'<span class="under">{esc(under)}</span></span>')


def drawing(script, ex):
    """The example as token chips, with what each objective makes of it."""
    out = []
    if script == "gpt":
        out.append(f'<p>Each chip is an input token; under it, the token it is trained to predict '
                   f'(<code>get_batch</code>\'s <code>targets</code>, the inputs shifted by one), {ex["note"]}.</p>')
    elif script == "electra":
        out.append(f'<p>The masked input, then what the generator sampled at each masked position '
                   f'(under the chip: sampled / original). The discriminator\'s label is 1 (red outline) '
                   f'only where the sample differs from the original. Samples from {esc(ex["source"])}.</p>')
    else:
        out.append('<p>The input as the model reads it; under each chosen token, the original it must '
                   'predict. <span class="chip mask">mask</span> became the mask token, '
                   '<span class="chip random">random</span> a random token, <span class="chip kept">kept</span> '
                   'stayed' + (', and a blue border is segment B' if script != "roberta" else "")
                   + (". A gap opens each run of masked whole words (the n-grams; adjacent spans run together)"
                      if script == "albert" else "")
                   + (". Byte-level BPE writes a token's leading space as Ġ" if script == "roberta" else "")
                   + ".</p>")
    for row in ex["rows"] + ex.get("static", []):
        out.append(f'<h4>{esc(row["title"])}</h4><div class="chips" data-script="{row.get("script", script)}" '
                   f'data-example="{row["example"]}">')
        prev_span = None
        for t in row["tokens"]:
            classes = [t.get("fate", "")] if t.get("fate") else []
            if t.get("segment"):
                classes.append("seg1")
            if t.get("replaced"):
                classes.append("replaced")
            if t.get("span") and t["span"] != prev_span:
                classes.append("span-start")
                prev_span = t["span"]
            if script == "gpt":
                under = "→ " + t["target_text"]
            elif script == "electra" and t["fate"]:
                under = f'{t["sample_text"]} / {t["original_text"]}'
            else:
                under = t["original_text"] if t.get("fate") else "\u00a0"
            out.append(chip(t, under, classes))
        out.append("</div>")
        if row.get("padding"):
            out.append(f'<p class="same">then {row["padding"]} padding positions.</p>')
    if "pair" in ex:
        out.append(f'<p data-pair="{ex["pair"]}">Pair label: {esc(ex["pair_text"])}.</p>')
    if "static" in ex:
        out.append("<p>RoBERTa's two epochs of the same sequence carry different masks (the mask is keyed by "
                   "the example); BERT's two epochs of one instance carry the same mask (keyed by the "
                   "instance).</p>")
    return "\n".join(out)


def script_page(script, ex, out):
    lines, hl = paper_part(script), highlighted(script)
    total = len((ROOT / f"{script}.py").read_text().splitlines())
    title, authors, year = about(script)
    paper, url, release = PAPERS[script]
    defs = units(script)
    starts = {}
    for u in defs:
        line = next(i for i in range(u.start, u.end + 1) if not lines[i - 1].lstrip().startswith(("#", "@")))
        starts.setdefault(line, u.name)
    toc = []
    for section, name in SECTIONS.items():
        here = [u for u in defs if u.section == section]
        if here:
            toc.append(f"<ul><li><strong>{esc(name)}</strong></li>"
                       + "".join(f'<li><a href="#{esc(u.name)}">{esc(u.name)}</a></li>' for u in here)
                       + "</ul>")
    rows = []
    for i, (line, h) in enumerate(zip(lines, hl), 1):
        anchor = f'<span id="{esc(starts[i])}"></span>' if i in starts else ""
        note = cite_tags(dict.fromkeys(citations(line, script)))
        rows.append(f'<tr id="L{i}"><td class="n">{anchor}<a href="#L{i}">{i}</a></td>'
                    f'<td class="code">{h}</td><td class="note">{note}</td></tr>')
    body = [f"<h1><code>{script}.py</code>: {esc(paper)}</h1>",
            f'<p><a href="{url}">{esc(title)}</a>, {esc(authors)}, {year}. '
            f'Release: <a href="{release}">{esc(release.removeprefix("https://github.com/"))}</a>.</p>',
            f'<div class="toc">{"".join(toc)}</div>',
            f'<h2 id="objective-drawn">The objective, drawn from <code>get_batch</code></h2>',
            f'<p>One training example made by <code>{script}.py</code>\'s own <code>get_batch</code> '
            f'on the default corpus at the tiny preset, seed 0 (the training split).</p>',
            drawing(script, ex),
            f'<h2 id="code">The paper part</h2>',
            '<table class="src"><colgroup><col class="n"><col><col class="note"></colgroup>'
            + "".join(rows) + "</table>",
            f'<p class="fence" id="fence">{total - len(lines)} lines of shared plumbing, identical in every '
            f'script: <a href="{repo_link(out, "docs/layout.md")}">docs/layout.md</a>.</p>']
    page(f"{script}.py: {paper}", "\n".join(body), out, f"{script}.html")


def index_page(counts, out):
    rows = []
    for s in SCRIPTS:
        title, authors, year = about(s)
        paper, url, release = PAPERS[s]
        rows.append(f'<tr><td>{esc(paper)}</td><td><a href="{url}">{esc(title)}</a></td><td>{esc(authors)}</td>'
                    f'<td>{year}</td><td><a href="{s}.html"><code>{s}.py</code></a></td></tr>')
    diffs = []
    for (a, b), (changed, shares) in counts.items():
        paper = shares["paper"] + shares["release"]
        diffs.append(f'<tr><td><a href="diff-{a}-{b}.html"><code>{a}.py</code> → <code>{b}.py</code></a></td>'
                     f'<td class="num">{changed}</td><td class="num">{paper / changed:.0%}</td>'
                     f'<td class="num">{shares["checkpoint layout"] / changed:.0%}</td>'
                     f'<td class="num">{shares["ours"] / changed:.0%}</td></tr>')
    body = ["<h1>Pretraining papers, one readable file each</h1>",
            "<p>Five papers that shaped NLP pretraining, each one self-contained script. This site is made "
            "from the scripts themselves (<code>python docs/site.py</code>): what each paper changed, side by "
            "side, and each script with its citations and a training example drawn from its own code.</p>",
            "<h2>The papers</h2>",
            '<table class="list"><tr><th>paper</th><th>title</th><th>authors</th><th>year</th><th>script</th></tr>'
            + "".join(rows) + "</table>",
            "<h2>The diffs</h2>",
            '<table class="list"><tr><th>diff</th><th>changed lines</th><th>paper or release</th>'
            '<th>checkpoint layout</th><th>ours</th></tr>' + "".join(diffs) + "</table>",
            "<p>Changed lines are counted with definitions aligned by name, so they differ a little from "
            f'<code>diff</code>\'s count (<a href="{repo_link(out, "docs/layout.md")}">layout</a>). A hunk is the '
            "paper's (or its release's) when a changed line or its definition's docstring cites them, the "
            "checkpoint layout's in the checkpoints section, ours otherwise or where marked <code>ours:</code>.</p>"]
    page("Pretraining papers, one readable file each", "\n".join(body), out, "index.html")


def build(out, data_dir, run_dir=None):
    out.mkdir(parents=True, exist_ok=True)
    # Pygments' colours first: the page's own rules (a changed line's background) come after
    (out / "style.css").write_text(HtmlFormatter(style="default").get_style_defs(["td.code", "td.a", "td.b"])
                                   + "\n" + CSS.lstrip())
    counts = {(a, b): diff_page(a, b, out) for a, b in DIFFS}
    for s in SCRIPTS:
        script_page(s, example(s, data_dir, run_dir=run_dir if s == "electra" else None), out)
    index_page(counts, out)
    return out / "index.html"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "site"), metavar="DIR", help="the folder to write (default: site/)")
    p.add_argument("--data", default=str(ROOT / "runs" / "site"), metavar="DIR",
                   help="where the drawn examples' tokenizers and data are prepared, once "
                        "(default: runs/site/)")
    p.add_argument("--run-dir", metavar="DIR", help="a trained electra.py run folder: its generator "
                   "makes the drawn samples (default: an untrained generator)")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.run_dir and not (Path(args.run_dir) / "ckpt.pt").exists():
        print(f"error: --run-dir {args.run_dir}: no ckpt.pt there", file=sys.stderr)
        return 1
    index = build(Path(args.out).resolve(), Path(args.data).resolve(), args.run_dir)
    print(f"built in {time.time() - t0:.1f}s", file=sys.stderr)
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
