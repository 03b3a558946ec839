"""The prose that quotes the code is held to it: every identifier a walkthrough or the README names in backticks
exists in the scripts it discusses, the README's diff excerpt is a hunk of today's diff, and the walkthroughs quote
no measured figure (those live in benchmarks/RESULTS.md, where a new measurement replaces them)."""

import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
DISCUSSES = {"docs/diff-bert-roberta.md": ["bert", "roberta"], "docs/diff-bert-albert.md": ["bert", "albert"],
             "docs/diff-bert-electra.md": ["bert", "electra"], "docs/gpt-and-bert.md": ["gpt", "bert"],
             "README.md": PAPERS + ["common", "finetune", "compare", "bench", "plot"]}
NOT_CODE = {"sentencepiece": "a library's name", "__dunder__": "a kind of name in the corpus"}
FILE = re.compile(r".*\.(py|md|json|txt|model|safetensors|bin|pt|jsonl|png)$")
# a probability or score quoted from a run, a rate, a duration: not the papers' settings (lr 0.00176, 15%)
MEASURED = re.compile(r"\(0\.\d{3}\)|\b(AUC|accuracy|loss)\b\D{0,40}\d\.\d{3}|\d\.\d{3} · |tokens?/s\b|"
                      r"\b\d+(\.\d+)? ?(s|ms|min|minutes|seconds)\b")


def identifiers(text):
    """The backticked names of a Markdown text: words and dotted names (`encode()` and `lm_head.*` as their names),
    not commands, file names or token strings."""
    for quoted in re.findall(r"`([^`\n]+)`", text):
        name = re.sub(r"\(\)$|\.\*$", "", quoted)
        if not FILE.match(name) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            yield name


@pytest.mark.parametrize("doc", DISCUSSES)
def test_every_name_the_prose_quotes_is_in_the_scripts_it_discusses(doc):
    words = set(re.findall(r"[A-Za-z_]\w*", " ".join((ROOT / f"{s}.py").read_text() for s in DISCUSSES[doc])))
    missing = {n for n in identifiers((ROOT / doc).read_text()) if n not in NOT_CODE
               and not all(part in words for part in n.split("."))}
    assert not missing, f"{doc} names {sorted(missing)}, which {', '.join(DISCUSSES[doc])} do not hold"


def test_the_names_check_catches_a_name_that_is_gone():
    assert list(identifiers("`mask_tokens()`, `lm_head.*`, `bert.py`, `[CLS]`, `diff a b`")) == ["mask_tokens",
                                                                                                "lm_head"]


@pytest.mark.skipif(shutil.which("diff") is None, reason="needs the diff command")
def test_the_readme_excerpt_is_a_hunk_of_todays_diff():
    excerpt = re.search(r"```text\n(\d[\d,]*[acd]\d[\d,]*\n.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    diff = subprocess.run(["diff", "bert.py", "roberta.py"], cwd=ROOT, capture_output=True, text=True).stdout
    hunks = re.split(r"\n(?=\d[\d,]*[acd]\d[\d,]*\n)", diff)
    assert excerpt.rstrip("\n") in [h.rstrip("\n") for h in hunks], "README.md's excerpt of `diff bert.py " \
                                                                    "roberta.py` is not one of its hunks today"


@pytest.mark.parametrize("doc", [d for d in DISCUSSES if d.startswith("docs/diff-")] + ["docs/gpt-and-bert.md"])
def test_the_walkthroughs_quote_no_measured_figure(doc):
    found = [line for line in (ROOT / doc).read_text().splitlines() if MEASURED.search(line)]
    assert not found, f"{doc} quotes a measured figure (link benchmarks/RESULTS.md instead): {found[0][:200]}"


def test_the_layout_page_gives_todays_diff_shares():
    """docs/layout.md's table of what each diff is made of is what docs/diff_shares.py measures today."""
    done = subprocess.run([sys.executable, "docs/diff_shares.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() in (ROOT / "docs" / "layout.md").read_text()
