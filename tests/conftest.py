import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"  # no test may use the network: the hub's libraries read only their cache
# torch.compile's kernel cache is shared by every process and not keyed by ATen's kernel set: a suite run under
# ATEN_CPU_CAPABILITY=avx2 or =default reusing a native run's kernels fails to build them or aborts. One cache each.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"torchinductor-tests-{os.environ.get('ATEN_CPU_CAPABILITY') or 'native'}"))


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
    """One tokenizer for every gpt.py run of the suite, trained once to save the time (training is deterministic:
    tests/test_tokenizers.py)."""
    import gpt

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    gpt.train_tokenizer(training_documents(gpt, corpus), gpt.PRESETS["tiny"]).save(str(path))
    return path


def training_documents(module, corpus):
    """The training split of a corpus file, as `module` splits it: a list of documents (lists of sentences)."""
    return [doc for split, doc in module.split_documents(module.read_corpus(str(corpus))) if split == "train"]


def tokenizer_file(module, corpus, folder):
    """`module`'s tokenizer trained once on the test corpus, saved as folder/tokenizer.json (see gpt_tokenizer)."""
    path = Path(folder) / "tokenizer.json"
    module.train_tokenizer(training_documents(module, corpus), module.PRESETS["tiny"]).save(str(path))
    return path


def split_data(module, corpus, tokenizer, folder):
    """`module`'s training data for the test corpus at the tiny preset, and its tokenizer."""
    shutil.copy(tokenizer, Path(folder) / "tokenizer.json")
    tok = module.load_tokenizer(folder)
    data = module.load_data(module.read_corpus(str(corpus)), tok, folder, module.PRESETS["tiny"])
    return {name: with_rows(module, split, module.PRESETS["tiny"].seq_len) for name, split in data.items()}, tok


def with_rows(module, split, T):
    """`split` with every instance's row of ids (and segment ids) as `input_ids` (`token_type_ids`), also where the
    paper stores instances as token ranges and builds the rows of a batch (`assemble`)."""
    if hasattr(module, "assemble"):
        n = len(split["rows"] if "rows" in split else split["pair_labels"])
        rows = module.assemble(split, np.arange(n), T)
        split["input_ids"], split["token_type_ids"] = rows if isinstance(rows, tuple) else (rows, None)
    return split


def made_instances(module, split, cfg, special, folder, *rng):
    """module.make_instances(split, cfg, *rng, special) written under `folder` as load_data caches it, with its rows."""
    made = dict(split, pad_id=special["pad"], cls_id=special["cls"], sep_id=special["sep"])
    instances = module.make_instances(split, cfg, *rng, special)
    made.update(module.cached(folder, [], instances, "making the training examples"))
    return with_rows(module, made, cfg.seq_len)


def changed_lines(a, b):
    """How many lines `diff a b` marks with < or >."""
    old, new = ((ROOT / f).read_text().splitlines() for f in (a, b))
    return sum(1 for line in difflib.unified_diff(old, new, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---")))
