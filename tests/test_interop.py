"""What a Hugging Face user gets from an export: AutoTokenizer encodes as encode_inputs does (singles, pairs,
truncation at the model's positions), and pipeline() gives what our demos and finetune.py give: fill-mask's top 5,
GPT's greedy continuation, ELECTRA's replaced-token probabilities, a classifier's predictions."""

import argparse
import contextlib
import dataclasses
import importlib
import io
import re

import pytest
import torch
import transformers as T
from tokenizers import Tokenizer

import conftest

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
TEXTS = ["Café crème: the value is returned.", "Raise an error if the file is empty!", "ünïcode and ASCII"]
SECONDS = ["Hello world, it's raised.", "none", "the list of the path"]
LONG = " ".join(["the interpreter reads the module and returns its value"] * 20)  # over 40 positions


@pytest.fixture(scope="module")
def tokenizers(corpus):
    """Each paper's tokenizer, trained on the test corpus."""
    return {name: importlib.import_module(name).train_tokenizer(conftest.training_documents(
        importlib.import_module(name), corpus), importlib.import_module(name).PRESETS["tiny"]) for name in PAPERS}


def random_model(name, tokenizer):
    """A small random model of the script with `tokenizer`, its weights spread enough that a top 5 has no ties."""
    mod = importlib.import_module(name)
    cfg = dataclasses.replace(mod.PRESETS["tiny"], vocab_size=tokenizer.get_vocab_size() + 8, hidden=32, heads=2,
                              ffn=128, layers=2, max_len=42 if name == "roberta" else 40, dropout=0.0, init_std=0.3)
    if name in ("albert", "electra"):
        cfg = dataclasses.replace(cfg, embed=16)
    torch.manual_seed(0)
    model = mod.Model(cfg).eval()
    model.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: GPT-1's classifier adds tokens to it
    return mod, model


def printed(show, model, **args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        show(model, argparse.Namespace(train=False, seed=0, **args))
    return out.getvalue()


@pytest.mark.floats
@pytest.mark.parametrize("name", PAPERS)
def test_auto_tokenizer_and_a_classification_pipeline_match_ours(name, tokenizers, tmp_path):
    mod, model = random_model(name, tokenizers[name])
    clf = mod.Classifier(model, 3, mod.RECIPES["paper"]).eval()  # GPT-1's: adds the task tokens
    mod.export_classifier(clf, tmp_path, ["a", "b", "c"], regression=False)
    tok = T.AutoTokenizer.from_pretrained(tmp_path)
    positions = clf.max_tokens
    assert tok.model_max_length == positions
    for first, second in [(TEXTS, None), (TEXTS, SECONDS), ([LONG], None), ([LONG], [TEXTS[0]])]:
        ours = mod.encode_inputs(clf.model.tokenizer, first, second, positions)
        theirs = tok(first, second, truncation=True)
        assert theirs["input_ids"] == [ids for ids, _ in ours]
        assert theirs.get("token_type_ids", [[0] * len(t) for _, t in ours]) == [types for _, types in ours]
    assert len(ours[0][0]) == positions  # the long text is cut to the model's positions
    pipe = T.pipeline("text-classification", model=str(tmp_path), device="cpu")
    predictions = [p["label"] for p in pipe([*TEXTS, LONG], truncation=True)]  # the long one: cut, not a crash
    with torch.no_grad():
        expected = []
        for ids, types in mod.encode_inputs(clf.model.tokenizer, [*TEXTS, LONG], None, positions):
            logits = clf(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([types]))
            expected.append("abc"[int(logits.argmax())])
    assert predictions == expected


@pytest.mark.floats
@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_fill_mask_gives_the_top_five_of_fill(name, tokenizers, tmp_path):
    mod, model = random_model(name, tokenizers[name])
    mod.export(model, tmp_path)
    text = f"The {mod.SPECIALS['mask']} statement raises an exception."
    shown = printed(mod.demo, model, demo=text).splitlines()[1]  # mask 1: 'word' p  'word' p ...
    ours = re.findall(r"'(.*?)' (\d\.\d{3})", shown)
    theirs = T.pipeline("fill-mask", model=str(tmp_path), device="cpu")(text, top_k=5)
    assert [(r["token_str"], f"{r['score']:.3f}") for r in theirs] == ours and len(ours) == 5


@pytest.mark.floats
def test_text_generation_gives_the_greedy_continuation_of_sample(tokenizers, tmp_path):
    mod, model = random_model("gpt", tokenizers["gpt"])
    mod.export(model, tmp_path)
    prompt = "the python interpreter"
    pipe = T.pipeline("text-generation", model=str(tmp_path), device="cpu")
    out = pipe(prompt, do_sample=False, max_new_tokens=12, return_tensors=True)[0]["generated_token_ids"]
    shown = printed(mod.demo, model, demo=prompt, max_new_tokens=12, temperature=1.0, top_k=1)  # top-1: greedy
    assert len(out) == len(tokenizers["gpt"].encode(prompt).ids) + 12
    assert shown == f"sample: {tokenizers['gpt'].decode(list(out))}\n"


@pytest.mark.floats
def test_the_discriminator_gives_the_probabilities_of_detect(tokenizers, tmp_path):
    mod, model = random_model("electra", tokenizers["electra"])
    mod.export(model, tmp_path)
    text = "return the value of the list , or none if the if is empty ."
    shown = [float(line.split()[1]) for line in printed(mod.demo, model, demo=text).splitlines()[2:]]
    tok = T.AutoTokenizer.from_pretrained(tmp_path / "discriminator")
    hf = T.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    with torch.no_grad():
        probs = hf(**tok(text, return_tensors="pt")).logits.sigmoid()[0, 1:-1]  # the text's tokens
    assert len(shown) == len(probs) > 5
    assert [f"{p:.3f}" for p in probs.tolist()] == [f"{p:.3f}" for p in shown]


def test_a_hub_name_is_read_from_the_hub_cache_and_without_it_is_one_error_line(tokenizers, tmp_path):
    mod, model = random_model("bert", tokenizers["bert"])
    commit = "0123456789abcdef0123456789abcdef01234567"  # the hub cache's layout: refs name the snapshot
    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    mod.export(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    offline = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0",  # online, but every connection
               "HF_ENDPOINT": "http://127.0.0.1:9"}  # is refused at once
    fill = ["--fill", "the [MASK] is raised"]
    cached = conftest.run_script("bert.py", "--from-pretrained", "someone/tiny-bert", *fill, env=offline)
    folder = conftest.run_script("bert.py", "--from-pretrained", repo / "snapshots" / commit, *fill)
    assert cached.returncode == 0 and cached.stdout == folder.stdout and "mask 1:" in cached.stdout
    missing = conftest.run_script("bert.py", "--from-pretrained", "someone/other-bert", *fill, env=offline)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == ("error: --from-pretrained someone/other-bert: no such folder, and not from the hub "
                              "(the hub cannot be reached, and it is not in the cache)\n")
