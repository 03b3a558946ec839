import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small slice of the default corpus as a text file: 60 documents, blank lines between them. (The first 60
    would hold out the `class` and `id-classes` topics, which validation drops as parts of training topics.)"""
    import gpt

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join("\n".join(doc) for doc in gpt.default_corpus()[1:61]) + "\n")
    return path


def run_script(*args, cwd=None, env=None):
    """Run a command in a fresh process; returns the CompletedProcess with text output."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=600)


@pytest.fixture(scope="session")
def gpt_tokenizer(corpus, tmp_path_factory):
    """One tokenizer for every gpt.py run of the suite: BPE training breaks ties between equally frequent pairs
    differently from run to run, so runs compared with each other must share the run folder's tokenizer."""
    import gpt

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    gpt.train_tokenizer(gpt.split_documents(gpt.read_corpus(str(corpus)))["train"], gpt.PRESETS["tiny"]).save(str(path))
    return path


def tokenizer_file(module, corpus, folder):
    """`module`'s tokenizer trained once on the test corpus, saved as folder/tokenizer.json: runs compared with
    each other must share it (see gpt_tokenizer)."""
    path = Path(folder) / "tokenizer.json"
    docs = module.split_documents(module.read_corpus(str(corpus)))["train"]
    module.train_tokenizer(docs, module.PRESETS["tiny"]).save(str(path))
    return path


def split_data(module, corpus, tokenizer, folder):
    """`module`'s training data for the test corpus at the tiny preset, and its tokenizer."""
    shutil.copy(tokenizer, Path(folder) / "tokenizer.json")
    tok = module.load_tokenizer(folder)
    return module.load_data(module.read_corpus(str(corpus)), tok, folder, module.PRESETS["tiny"]), tok


def changed_lines(a, b):
    """How many lines `diff a b` marks with < or >."""
    old, new = ((ROOT / f).read_text().splitlines() for f in (a, b))
    return sum(1 for line in difflib.unified_diff(old, new, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---")))
