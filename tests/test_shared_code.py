"""The shared plumbing is the same text in every paper script, so that a diff between two scripts shows only
what the papers changed. `python tests/test_shared_code.py --fix` copies gpt.py's version into the others."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [p for p in (ROOT / f"{name}.py" for name in ("gpt", "bert", "roberta", "albert", "electra")) if p.exists()]
CANONICAL = ROOT / "gpt.py"
SHARED = [
    "UserError", "get_tokenizer", "split_sentences", "default_corpus", "read_corpus", "split_documents", "cache_tokens",
    "uniform", "HFConfig", "read_pretrained", "load_weights", "setup_runtime", "configure_optimizer", "get_lr",
    "evaluate", "save_checkpoint", "load_checkpoint", "fingerprint", "take_lock", "release_lock", "process_alive",
    "flops_per_token", "peak_flops", "overrides", "train", "load_model", "build_parser", "run",
]
EXCEPTIONS = {"albert": {"configure_optimizer"}}  # ALBERT trains with LAMB, not Adam


def definitions(path):
    """Top-level function and class definitions of a script: name -> (first line, last line, source text)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[node.name] = (first, node.end_lineno, "".join(lines[first - 1:node.end_lineno]))
    return out


def shared_names(script):
    return [n for n in SHARED if n not in EXCEPTIONS.get(script.stem, ())]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shared_plumbing_is_identical(script):
    canonical, ours = definitions(CANONICAL), definitions(script)
    for name in shared_names(script):
        assert name in ours, f"{script.name} lacks the shared {name}"
        assert ours[name][2] == canonical[name][2], f"{script.name}: {name} differs from gpt.py (run --fix)"


def test_the_list_names_real_definitions():
    assert set(SHARED) <= set(definitions(CANONICAL))


def fix(canonical_path=CANONICAL, scripts=SCRIPTS):
    """Replace each script's copy of the shared definitions by the canonical one."""
    canonical = definitions(canonical_path)
    for script in scripts:
        if script == canonical_path:
            continue
        lines = script.read_text().splitlines(keepends=True)
        ours = definitions(script)
        for name in sorted(shared_names(script), key=lambda n: -ours.get(n, (0,))[0]):
            if name in ours:
                first, last, _ = ours[name]
                lines[first - 1:last] = [canonical[name][2]]
            else:
                print(f"{script.name}: no {name} to replace; add it by hand")
        script.write_text("".join(lines))
        print(f"{script.name}: shared plumbing copied from {canonical_path.name}")


def test_fix_propagates_the_canonical_copy(tmp_path):
    source = CANONICAL.read_text()
    (tmp_path / "gpt.py").write_text(source)
    drifted = source.replace('"""Linear warmup from', '"""A drifted copy: linear warmup from')
    assert drifted != source
    (tmp_path / "bert.py").write_text(drifted)
    fix(tmp_path / "gpt.py", [tmp_path / "gpt.py", tmp_path / "bert.py"])
    assert (tmp_path / "bert.py").read_text() == source


if __name__ == "__main__":
    if sys.argv[1:] != ["--fix"]:
        sys.exit("usage: python tests/test_shared_code.py --fix")
    fix()
