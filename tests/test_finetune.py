"""finetune.py and the fine-tuning sections of the paper scripts: GLUE's metrics, the task formats, the built-in
task, each paper's input format, head (parity with the Hugging Face sequence classifiers), recipe, ELECTRA's layer-wise
learning rates, GPT-1's added tokens and auxiliary loss, the exports, a tiny end-to-end run and bad input."""

import dataclasses
import importlib
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
import transformers as T
from tokenizers import Tokenizer, models

import conftest
import finetune

PAPERS = ["gpt", "bert", "roberta", "albert", "electra"]
CLASSIFIERS = {"gpt": T.OpenAIGPTForSequenceClassification, "bert": T.BertForSequenceClassification,
               "roberta": T.RobertaForSequenceClassification, "albert": T.AlbertForSequenceClassification,
               "electra": T.ElectraForSequenceClassification}


def small_model(name, vocab_size=99):
    """A random model of the script, small enough for a test, with a word-level tokenizer of its special tokens."""
    mod = importlib.import_module(name)
    cfg = dataclasses.replace(mod.PRESETS["tiny"], vocab_size=vocab_size, hidden=32, heads=2, ffn=128, layers=2,
                              max_len=40, dropout=0.0)
    if name in ("albert", "electra"):
        cfg = dataclasses.replace(cfg, embed=16)
    if name == "electra":
        cfg = dataclasses.replace(cfg, gen_size=0.5)
    torch.manual_seed(0)
    model = mod.Model(cfg)
    vocab = {token: i for i, token in enumerate(mod.SPECIALS.values())}
    vocab.update({f"w{i}": i for i in range(len(vocab), 30)})
    model.tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=mod.SPECIALS["unk"]))
    from tokenizers import pre_tokenizers
    model.tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return mod, model


def padded_batch(name, pad_id):
    ids = torch.randint(6, 99, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = pad_id
    types = torch.zeros_like(ids)
    if name in ("bert", "albert", "electra"):
        types[:, 5:] = 1
    return ids, mask, types


# --- metrics, by hand ---


def test_metrics_against_hand_computations():
    assert finetune.accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    assert finetune.f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert finetune.mcc([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(2 / math.sqrt(12))  # (2 − 0) / √(3·2·2·1)
    assert finetune.mcc([1, 1], [0, 0]) == 0.0  # an empty row: 0, not a division by zero
    assert finetune.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert finetune.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))  # ties: rank 2.5


# --- tasks ---


def test_the_builtin_task_is_split_by_module_without_shared_sentences():
    task = finetune.builtin_task()
    dev, test = task["dev"]["dev"], task["test"]
    assert task["labels"] == finetune.BUILTIN_PACKAGES and task["metrics"] == ["accuracy"]
    train_text = {a for a, _, _ in task["train"]}
    assert not train_text & {a for a, _, _ in dev} and not train_text & {a for a, _, _ in test}
    assert not {a for a, _, _ in dev} & {a for a, _, _ in test}
    for split, cap in ((task["train"], 100), (dev, 60), (test, 60)):
        counts = np.bincount([label for _, _, label in split], minlength=6)
        assert counts.max() <= cap and counts.min() >= cap // 3  # every class, none dominant
    assert all(finetune.BUILTIN_PACKAGES[label] not in a.lower() for a, _, label in task["train"] + dev + test)
    majority = finetune.majority(task)["dev"]["accuracy"]
    assert majority < 0.25  # six classes, near balanced
    assert finetune.builtin_task.__wrapped__() == task  # deterministic: a second reading, not the cached one


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_glue_folders_are_read_with_their_own_column_layouts(tmp_path):
    cola = tmp_path / "CoLA"  # no header; label in column 1, sentence in column 3
    write(cola / "train.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more books.\n")
    write(cola / "dev.tsv", "gj04\t1\t\tA dog barked.\n")
    task = finetune.read_task(str(cola))
    assert task["train"] == [("The sailors rode the breeze.", None, 1), ("The more books.", None, 0)]
    assert task["metrics"] == ["mcc"] and task["labels"] == ["0", "1"]
    mrpc = tmp_path / "MRPC"
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(mrpc / "train.tsv", header + "1\t1\t2\tHe said \"so\".\tHe said so.\n0\t3\t4\tA b.\tC d.\n")
    write(mrpc / "dev.tsv", header + "1\t5\t6\tE f.\tE f!\n")
    task = finetune.read_task(str(mrpc))
    assert task["train"][0] == ('He said "so".', "He said so.", 1) and task["metrics"] == ["f1", "accuracy"]
    mnli = tmp_path / "MNLI"
    header = "index\tsentence1\tsentence2\tgold_label\n"
    write(mnli / "train.tsv", header + "0\tA.\tB.\tneutral\n1\tC.\tD.\tentailment\n2\tE.\tF.\tcontradiction\n")
    write(mnli / "dev_matched.tsv", header + "0\tA.\tB.\tentailment\n")
    write(mnli / "dev_mismatched.tsv", header + "0\tA.\tB.\tcontradiction\n")
    task = finetune.read_task(str(mnli))
    assert list(task["dev"]) == ["dev_matched", "dev_mismatched"]
    assert task["labels"] == ["contradiction", "entailment", "neutral"] and task["dev"]["dev_matched"][0][2] == 1
    stsb = tmp_path / "STS-B"
    header = "index\tgenre\tsentence1\tsentence2\tscore\n"
    write(stsb / "train.tsv", header + "0\tmain\tA.\tB.\t3.8\n1\tmain\tC.\tD.\t1\n")
    write(stsb / "dev.tsv", header + "0\tmain\tA.\tB.\t4.25\n")
    task = finetune.read_task(str(stsb))
    assert task["regression"] and task["train"][0][2] == 3.8 and task["metrics"] == ["pearson", "spearman"]


@pytest.mark.parametrize("ext", ["tsv", "csv", "jsonl"])
def test_generic_files_single_pairs_and_regression(tmp_path, ext):
    def rows(header, lines):
        if ext == "jsonl":
            return "".join(json.dumps(dict(zip(header, line))) + "\n" for line in lines)
        sep = "\t" if ext == "tsv" else ","
        return sep.join(header) + "\n" + "".join(sep.join(map(str, line)) + "\n" for line in lines)
    single = tmp_path / "single"
    write(single / f"train.{ext}", rows(["sentence", "label"], [["good film", "pos"], ["bad film", "neg"]]))
    write(single / f"dev.{ext}", rows(["sentence", "label"], [["fine film", "pos"]]))
    task = finetune.read_task(str(single))
    assert task["labels"] == ["neg", "pos"] and task["train"][0] == ("good film", None, 1) and not task["regression"]
    pairs = tmp_path / "pairs"
    write(pairs / f"train.{ext}", rows(["sentence1", "sentence2", "label"], [["a", "b", 0.5], ["c", "d", 2]]))
    write(pairs / f"dev.{ext}", rows(["sentence1", "sentence2", "label"], [["e", "f", 1.5]]))
    write(pairs / f"test.{ext}", rows(["sentence1", "sentence2", "label"], [["g", "h", 0]]))
    task = finetune.read_task(str(pairs))
    assert task["regression"] and task["train"][0] == ("a", "b", 0.5) and task["test"] == [("g", "h", 0.0)]


def test_a_byte_order_mark_an_unlabelled_test_file_and_non_finite_labels(tmp_path):
    folder = tmp_path / "MRPC"  # GLUE's MRPC train.tsv starts with a byte-order mark
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(folder / "train.tsv", header + "1\t1\t2\tA b.\tA b!\n0\t3\t4\tC.\tD.\n")
    write(folder / "dev.tsv", header + "1\t5\t6\tE.\tE!\n")
    assert finetune.read_task(str(folder))["train"][0] == ("A b.", "A b!", 1)
    generic = tmp_path / "generic"
    write(generic / "train.tsv", "sentence\tlabel\na\tx\nb\ty\n")
    write(generic / "dev.tsv", "sentence\tlabel\na\tx\n")
    write(generic / "test.tsv", "sentence\nc\n")  # no labels: the test split is left out, not an error
    assert finetune.read_task(str(generic))["test"] == []
    write(generic / "train.tsv", "sentence\tlabel\na\t0.5\nb\tnan\n")
    with pytest.raises(finetune.UserError, match="not a finite number"):
        finetune.read_task(str(generic))


# --- each paper's format, head and recipe ---


@pytest.mark.parametrize("name", PAPERS)
def test_input_formats(name):
    mod, model = small_model(name)
    clf = mod.Classifier(model, 2, mod.RECIPES["paper"])  # GPT-1's task tokens are added here
    tok = clf.model.tokenizer
    (ids, types), = mod.encode_inputs(tok, ["w6 w7 w8"], ["w9 w10"], max_len=7)  # the longer text is cut first
    words = [tok.id_to_token(i) for i in ids]
    expected = {"gpt": ["_start_", "w6", "w7", "_delim_", "w9", "w10", "_classify_"],
                "roberta": ["<s>", "w6", "w7", "</s>", "</s>", "w9", "</s>"]}
    bert_like = ["[CLS]", "w6", "w7", "[SEP]", "w9", "w10", "[SEP]"]
    assert words == expected.get(name, bert_like)
    assert types == ([0] * 4 + [1] * 3 if name in ("bert", "albert", "electra") else [0] * len(ids))
    (single, _), = mod.encode_inputs(tok, ["w6"])
    assert len(single) == 3  # the text and two special tokens


@pytest.mark.floats
@pytest.mark.parametrize("regression", [False, True], ids=["classes", "regression"])
@pytest.mark.parametrize("name", PAPERS)
def test_the_head_matches_the_hugging_face_classifier_and_exports_to_it(name, regression, tmp_path):
    mod, model = small_model(name)
    outputs = 1 if regression else 3
    clf = mod.Classifier(model, outputs, mod.RECIPES["paper"]).eval()
    mod.export_classifier(clf, tmp_path, ["score"] if regression else ["a", "b", "c"], regression)
    hf, info = CLASSIFIERS[name].from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not any(info.values()), info  # no missing, unexpected or mismatched tensor
    assert hf.config.num_labels == outputs and hf.config.problem_type == ("regression" if regression
                                                                          else "single_label_classification")
    ids, mask, types = padded_batch(name, clf.pad_id)
    with torch.no_grad():
        ours = clf(ids, mask, types)
        theirs = hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=None if name == "gpt" else types).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.floats
@pytest.mark.parametrize("name", PAPERS)
def test_the_pretrained_model_exports_to_its_hugging_face_class(name, tmp_path):
    mod, model = small_model(name)
    model.eval()
    mod.export(model, tmp_path)
    ids, mask, types = padded_batch(name, 1 if name == "roberta" else 0)
    load = dict(output_loading_info=True, attn_implementation="eager")
    with torch.no_grad():
        if name == "gpt":
            hf, info = T.OpenAIGPTLMHeadModel.from_pretrained(tmp_path, **load)
            pairs = [(model(ids)[0], hf.eval()(input_ids=ids).logits)]
        elif name == "roberta":
            hf, info = T.RobertaForMaskedLM.from_pretrained(tmp_path, **load)
            pairs = [(model(ids, mask), hf.eval()(input_ids=ids, attention_mask=mask).logits)]
        elif name in ("bert", "albert"):
            cls = T.BertForPreTraining if name == "bert" else T.AlbertForPreTraining
            hf, info = cls.from_pretrained(tmp_path, **load)
            out = hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types)
            mlm, pair = model(ids, mask, types)
            pairs = [(mlm, out.prediction_logits), (pair, out[1])]
        else:
            hf, info = T.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator", **load)
            gen, gen_info = T.ElectraForMaskedLM.from_pretrained(tmp_path / "generator", **load)
            assert not any(gen_info.values()), gen_info
            h = model.generator(model.embeddings(ids, types), None)
            logits = model.head(model.mlm.ln(torch.nn.functional.gelu(model.mlm.dense(h))))
            pairs = [(model.detect(ids, mask, types), hf.eval()(input_ids=ids, attention_mask=mask,
                                                                  token_type_ids=types).logits),
                     (logits, gen.eval()(input_ids=ids, token_type_ids=types).logits)]
    assert not any(info.values()), info
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_electra_learns_each_layer_at_its_own_rate():
    mod, model = small_model("electra")
    recipe = mod.Recipe(lr=1.0, layer_decay=0.5)
    clf = mod.Classifier(model, 2, recipe)
    rate = {id(p): g["lr"] for g in mod.finetune_groups(clf, recipe) for p in g["params"]}
    L = model.cfg.layers  # the release: lr · decay^(L + 2 − depth), embeddings at depth 0, layer i at i + 1
    assert rate[id(clf.out.weight)] == rate[id(clf.dense.weight)] == 1.0
    assert rate[id(model.discriminator.blocks[L - 1].attn.qkv.weight)] == 0.5 ** 2
    assert rate[id(model.discriminator.blocks[0].attn.qkv.weight)] == 0.5 ** (L + 1)
    assert rate[id(model.embeddings.tokens.weight)] == rate[id(model.discriminator.project.weight)] == 0.5 ** (L + 2)
    bert, bert_model = small_model("bert")
    assert {g["lr"] for g in bert.finetune_groups(bert.Classifier(bert_model, 2, bert.Recipe()), bert.Recipe())} == {
        bert.Recipe().lr}  # one rate everywhere elsewhere


def test_gpt_adds_its_task_tokens_and_an_auxiliary_lm_loss():
    mod, model = small_model("gpt", vocab_size=30)  # the tokenizer fills the table: the task tokens need new rows
    clf = mod.Classifier(model, 2, mod.RECIPES["paper"])
    assert [clf.model.tokenizer.token_to_id(t) for t in mod.TASK_TOKENS.values()] == [30, 31, 32, 33]
    assert model.cfg.vocab_size == 34 and model.head.weight is model.embeddings.tokens.weight  # grown, still tied
    ids, mask, _ = padded_batch("gpt", clf.pad_id)
    ids = ids % 34
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}
    clf.eval()
    without, logits = mod.finetune_loss(clf, batch, dataclasses.replace(mod.RECIPES["paper"], lm_weight=0.0))
    assert torch.allclose(without, torch.nn.functional.cross_entropy(logits, batch["labels"]))
    with_lm, _ = mod.finetune_loss(clf, batch, mod.RECIPES["paper"])
    lm_logits, _ = model(ids, attention_mask=mask)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    lm = torch.nn.functional.cross_entropy(lm_logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(with_lm, without + 0.5 * lm, atol=1e-6)


def test_every_paper_has_its_recipe():
    lr = {name: importlib.import_module(name).RECIPES["paper"].lr for name in PAPERS}
    assert lr == {"gpt": 6.25e-5, "bert": 2e-5, "roberta": 2e-5, "albert": 1e-5, "electra": 1e-4}
    gpt, electra, roberta = (importlib.import_module(n) for n in ("gpt", "electra", "roberta"))
    assert gpt.RECIPES["paper"].lm_weight == 0.5 and gpt.RECIPES["paper"].warmup == 0.002
    assert electra.RECIPES["paper"].layer_decay == 0.8 and electra.RECIPES["large"].layer_decay == 0.9
    assert roberta.RECIPES["paper"].weight_decay == 0.1 and roberta.RECIPES["paper"].warmup == 0.06


# --- end to end, and bad input ---


@pytest.fixture(scope="module")
def bert_run(corpus, tmp_path_factory):
    """A tiny bert.py checkpoint after 20 steps."""
    import bert

    folder = tmp_path_factory.mktemp("bert-run")
    conftest.tokenizer_file(bert, corpus, folder)
    bert.train(bert.build_parser().parse_args(["--train", "--size", "tiny", "--device", "cpu", "--out", str(folder),
                                               "--data", str(corpus), "--steps", "20"]))
    return folder


def test_a_tiny_fine_tune_end_to_end(bert_run, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["bert", "--ckpt", str(bert_run / "ckpt.pt"), "--seeds", "2", "--epochs", "1", "--out", str(out),
            "--device", "cpu", "--dtype", "fp32"]  # fp32, as transformers' pipeline below computes
    assert finetune.cli(argv) == 0
    results = json.loads((out / "results.json").read_text())
    for tag in ("pretrained", "scratch"):
        assert len(results[tag]["dev"]["accuracy"]["each"]) == 2
    assert results["majority"]["dev"]["accuracy"] < 0.25 and results["recipe"]["lr"] == 1e-3  # the tiny recipe
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # two runs of one epoch each, twice
    hf = T.BertForSequenceClassification.from_pretrained(out / "model")
    assert hf.config.id2label[0] == "asyncio"
    capsys.readouterr()
    assert finetune.cli(argv) == 0  # the randomly initialised runs are cached
    assert "cached runs" in capsys.readouterr().out
    assert finetune.cli(["bert", "--eval-only", "--from-pretrained", str(out / "model"), "--device", "cpu",
                         "--dtype", "fp32"]) == 0
    best = max(results["pretrained"]["dev"]["accuracy"]["each"])
    assert f"accuracy {best:.4f}" in capsys.readouterr().out  # the exported model scores what training measured
    dev = finetune.read_task("builtin")["dev"]["dev"]  # and transformers' pipeline predicts what it predicted
    pipe = T.pipeline("text-classification", model=str(out / "model"), device="cpu")
    predicted = [p["label"] for p in pipe([text for text, _, _ in dev], truncation=True)]
    assert f"{np.mean([p == finetune.BUILTIN_PACKAGES[y] for p, (_, _, y) in zip(predicted, dev)]):.4f}" == f"{best:.4f}"
    assert 0 < results["test"]["accuracy"] <= 1  # the best seed, scored once on the test split
    config = json.loads((out / "model" / "config.json").read_text())  # the same classes in another order
    names = config["id2label"]
    config["id2label"] = {str(i): names[str(5 - i)] for i in range(6)}
    (out / "model" / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file
    weights = load_file(str(out / "model" / "model.safetensors"))
    for k in ("classifier.weight", "classifier.bias"):
        weights[k] = weights[k].flip(0).contiguous()
    save_file(weights, str(out / "model" / "model.safetensors"))
    assert finetune.cli(["bert", "--eval-only", "--from-pretrained", str(out / "model"), "--device", "cpu",
                         "--dtype", "fp32"]) == 0
    assert f"accuracy {best:.4f}" in capsys.readouterr().out  # classes matched by name


def test_the_paper_script_exports_its_checkpoint(bert_run, tmp_path):
    import bert

    assert bert.run(bert.main, ["--out", str(bert_run), "--export", str(tmp_path / "hf")]) == 0
    hf, info = T.BertForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()) and (tmp_path / "hf" / "tokenizer.json").exists()


def test_bad_input_gives_one_line_and_writes_nothing(bert_run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "task"
    write(folder / "train.tsv", "sentence\tlabel\na\tx\nb\ty\n")
    out = tmp_path / "out"
    cases = [
        (["bert", "--task", str(tmp_path / "nowhere")], "not 'builtin', a GLUE task"),
        (["bert", "--task", str(folder)], "no dev.tsv, dev.csv or dev.jsonl"),
        (["nope"], "unknown paper 'nope'"),
        (["bert", "--epochs", "0"], "--epochs must be positive"),
        (["bert", "--max-len", "3"], "--max-len must leave room"),
        (["bert", "--ckpt", str(tmp_path / "missing.pt")], "no checkpoint at"),
    ]
    write(tmp_path / "cols" / "train.tsv", "text\tlabel\na\tx\n")
    write(tmp_path / "cols" / "dev.tsv", "text\tlabel\na\tx\n")
    cases.append((["bert", "--task", str(tmp_path / "cols")], "no column 'sentence'"))
    write(tmp_path / "unseen" / "train.tsv", "sentence\tlabel\na\tx\n")
    write(tmp_path / "unseen" / "dev.tsv", "sentence\tlabel\na\tz\n")
    cases.append((["bert", "--task", str(tmp_path / "unseen")], "label 'z' does not occur in training"))
    write(tmp_path / "reg" / "train.tsv", "sentence\tlabel\na\t0.5\nb\t1.5\n")
    write(tmp_path / "reg" / "dev.tsv", "sentence\tlabel\na\thigh\n")
    cases.append((["bert", "--task", str(tmp_path / "reg")], "a regression label is not a number"))
    if not torch.cuda.is_available():  # the device is checked as the paper scripts check it
        cases.append((["bert", "--device", "cuda"], "--device cuda: no CUDA device is available"))
    if not torch.backends.mps.is_available():
        cases.append((["bert", "--device", "mps"], "--device mps: no Apple GPU is available"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the library were not installed
    cases.append((["bert", "--task", "rte"], "needs the `datasets` library"))

    class Offline:  # a `datasets` library that cannot reach the hub
        @staticmethod
        def load_dataset(*args, **kwargs):
            raise ConnectionError("no network")
    cases.append((["bert", "--task", "mrpc"], "cannot load GLUE from the hub (ConnectionError)"))
    gpt_ckpt = tmp_path / "gpt" / "ckpt.pt"
    gpt_ckpt.parent.mkdir()
    torch.save({"script": "gpt"}, gpt_ckpt)
    cases.append((["bert", "--ckpt", str(gpt_ckpt)], "is not a bert.py checkpoint"))
    for argv, message in cases:
        if "mrpc" in argv:
            monkeypatch.setitem(sys.modules, "datasets", Offline)
        assert finetune.cli([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
        assert not out.exists()  # nothing written before the input is known good


def test_the_frozen_probe_compares_pretrained_and_random_features(bert_run, capsys):
    sys.path.insert(0, str(conftest.ROOT / "benchmarks"))
    import frozen_probe

    frozen_probe.main(["bert", "--ckpt", str(bert_run / "ckpt.pt")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bert: linear probe on frozen features")
    for line, name in zip(lines[1:], ("pretrained", "random init")):
        values = [float(v) for v in line.split() if v.replace(".", "").isdigit()]
        assert line.strip().startswith(name) and len(values) == 2 and all(0.1 < v <= 1 for v in values)


def test_ctrl_c_is_one_line_and_exit_status_130(bert_run, tmp_path):
    import signal
    import subprocess

    argv = [sys.executable, "finetune.py", "bert", "--ckpt", str(bert_run / "ckpt.pt"), "--epochs", "50",
            "--seeds", "1", "--out", str(tmp_path), "--device", "cpu"]
    child = subprocess.Popen(argv, cwd=conftest.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:  # a real Ctrl-C, once the first epoch is done
        if "epoch 1 " in line:
            child.send_signal(signal.SIGINT)
            break
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130 and err.startswith("interrupted: ") and err.count("\n") == 1, err
