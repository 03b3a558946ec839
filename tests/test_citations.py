"""Citations are part of the lesson: a bare `§3.1` in a script means its own paper, in the version its docstring
pins; any other paper's is named (`BERT §3.1`). Every citation in the paper parts must name a section, table, figure
or appendix that the pinned version has, and no line a script shares with its parent script carries a bare one
(it would read as the later paper's)."""

import re

import pytest

from conftest import ROOT
from test_shared_code import split_at_fence

# What each pinned version holds (read off the papers): numbered sections and appendices, tables, figures
PAPERS = {
    "GPT-1": {"script": "gpt", "pin": "OpenAI, 2018: § numbers are that report's",
              "sections": "1 2 3 3.1 3.2 3.3 4 4.1 4.2 5 6", "tables": 5, "figures": 2},
    "BERT": {"script": "bert", "pin": "§ numbers of arXiv 1810.04805v2",
             "sections": "1 2 2.1 2.2 2.3 3 3.1 3.2 4 4.1 4.2 4.3 4.4 5 5.1 5.2 5.3 6 A A.1 A.2 A.3 A.4 A.5 B B.1 C "
                         "C.1 C.2", "tables": 8, "figures": 5},
    "RoBERTa": {"script": "roberta", "pin": "§ numbers of arXiv 1907.11692v1",
                "sections": "1 2 2.1 2.2 2.3 2.4 2.5 3 3.1 3.2 3.3 4 4.1 4.2 4.3 4.4 5 5.1 5.2 5.3 6 7 A B C",
                "tables": 10, "figures": 0},
    "ALBERT": {"script": "albert", "pin": "§ numbers of arXiv 1909.11942v6",
               "sections": "1 2 2.1 2.2 2.3 3 3.1 3.2 4 4.1 4.2 4.2.1 4.2.2 4.3 4.4 4.5 4.6 4.7 4.8 4.9 5 A A.1 A.2 "
                           "A.3 A.4", "tables": 14, "figures": 2},
    "ELECTRA": {"script": "electra", "pin": "§ numbers of arXiv 2003.10555v1",
                "sections": "1 2 3 3.1 3.2 3.3 3.4 3.5 4 5 A B C D E F G H", "tables": 8, "figures": 4},
}
OWN = {p["script"]: name for name, p in PAPERS.items()}
PARENT = {"bert": "gpt", "roberta": "bert", "albert": "bert", "electra": "bert"}
ID = r"(?:[A-H](?:\.\d+)*|\d+(?:\.\d+)*)"
FIRST = r"(?:§ ?" + ID + r"|(?:Table|Figure) \d+|Appendix [A-H])"  # what opens a group of citations
ONE = r"(?:" + FIRST + r"|[A-H]\.\d+)"  # what may follow in it: `§3.1, A.1`
# a group: an optional paper's name, then citations joined by ", " or " and ", all of that paper
CITATION = re.compile(r"(?:\b(GPT-1|BERT|RoBERTa|ALBERT|ELECTRA) )?(" + FIRST + r"(?:(?:, | and )" + ONE + r")*)")


def citations(line, script):
    """(paper, (kind, number)) for each citation of a line: `§3.1, A.1` gives two, a bare one is the script's own
    paper's, `BERT §3, Figure 2` two of BERT's."""
    for m in CITATION.finditer(line):
        paper = m.group(1) or OWN[script]
        for one in re.findall(ONE, m.group(2)):
            kind, number = one.split(" ") if one.startswith(("Table", "Figure", "Appendix")) else (
                "section", one.lstrip("§ "))
            yield paper, ("section" if kind == "Appendix" else kind.lower(), number)


def exists(paper, what):
    kind, number = what
    p = PAPERS[paper]
    if kind == "section":
        return number in p["sections"].split()
    return 1 <= int(number) <= p[kind + "s"]


def paper_part(script):
    return split_at_fence((ROOT / f"{script}.py").read_text(), script)[0].splitlines()


@pytest.mark.parametrize("script", OWN)
def test_every_citation_names_what_the_pinned_paper_holds(script):
    docstring = " ".join(paper_part(script)[:5]).split('"""')[1]
    assert PAPERS[OWN[script]]["pin"] in docstring, f"{script}.py's docstring pins no version of its paper"
    wrong = [f"{script}.py:{i}: {paper} {what[0]} {what[1]}" for i, line in enumerate(paper_part(script), 1)
             for paper, what in citations(line, script) if not exists(paper, what)]
    assert not wrong, "citations the pinned papers do not hold:\n" + "\n".join(wrong)


@pytest.mark.parametrize("script", PARENT)
def test_no_line_shared_with_the_parent_script_carries_a_bare_citation(script):
    shared = {line.strip() for line in paper_part(PARENT[script])}
    bare = [f"{script}.py:{i}: {line.strip()}" for i, line in enumerate(paper_part(script), 1)
            if line.strip() in shared and any(m.group(1) is None for m in CITATION.finditer(line))]
    assert not bare, f"lines of {PARENT[script]}.py whose bare citation reads as {OWN[script]}'s:\n" + "\n".join(bare)


def test_the_citation_reader():
    assert list(citations("x = 1  # §3.1, A.1; BERT §4 and A.3, Table 9; Figure 2 (Appendix B)", "roberta")) == [
        ("RoBERTa", ("section", "3.1")), ("RoBERTa", ("section", "A.1")), ("BERT", ("section", "4")),
        ("BERT", ("section", "A.3")), ("BERT", ("table", "9")), ("RoBERTa", ("figure", "2")),
        ("RoBERTa", ("section", "B"))]
    assert not exists("RoBERTa", ("figure", "2")) and not exists("BERT", ("section", "3.3"))
    assert exists("ELECTRA", ("section", "3.2")) and exists("ALBERT", ("table", "14"))
