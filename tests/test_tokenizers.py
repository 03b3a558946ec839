"""Every paper's tokenizer is a function of its corpus: trained twice on the same text, in two processes (a hash
map's order, which the trainers follow, changes from one process to the next), it gives the same tokens and ids."""

import importlib
import json
import sys

import conftest

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
TRAIN = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import conftest
out = {}
for paper in sys.argv[3].split(","):
    mod = importlib.import_module(paper)
    docs = conftest.training_documents(mod, sys.argv[2])
    tok = mod.train_tokenizer(docs, mod.PRESETS["tiny"])
    out[paper] = {"vocab": tok.get_vocab(), "ids": [e.ids for e in tok.encode_batch([s for d in docs for s in d])]}
print(json.dumps(out))
"""


def test_each_tokenizer_trains_the_same_in_two_processes(corpus):
    done = conftest.run_script("-c", TRAIN, conftest.ROOT / "tests", corpus, ",".join(PAPERS))
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    for paper in PAPERS:
        mod = importlib.import_module(paper)
        docs = conftest.training_documents(mod, corpus)
        tok = mod.train_tokenizer(docs, mod.PRESETS["tiny"])
        assert 1000 < tok.get_vocab_size() <= mod.PRESETS["tiny"].vocab_size, paper
        assert tok.get_vocab() == theirs[paper]["vocab"], f"{paper}: another vocabulary"
        ids = [e.ids for e in tok.encode_batch([s for d in docs for s in d])]
        assert ids == theirs[paper]["ids"], f"{paper}: the same vocabulary, other tokens"


def test_the_pieces_numbered_first_are_ordinary_tokens(corpus):
    """WordPiece's "##" + letter pieces and GPT-1's letter + "</w>" pieces pass through the trainer as special
    tokens, to be numbered first; afterwards they are plain vocabulary: decoding keeps them, and text that spells
    one out is split as text."""
    for paper, piece in (("gpt", "v</w>"), ("bert", "##v"), ("electra", "##v")):
        mod = importlib.import_module(paper)
        tok = mod.train_tokenizer(conftest.training_documents(mod, corpus), mod.PRESETS["tiny"])
        assert [t["content"] for t in json.loads(tok.to_str())["added_tokens"]] == list(mod.SPECIALS.values())
        word = tok.encode("qzxjv")  # rare letters: no merges, so the last one is a piece of its own
        assert word.tokens[-1] == piece, (paper, word.tokens)
        assert tok.decode(word.ids, skip_special_tokens=True).replace(" ", "") == "qzxjv", paper
        if paper != "gpt":
            assert "##v" not in tok.encode("a ##v").tokens, paper


if __name__ == "__main__":
    sys.exit("run with pytest")
