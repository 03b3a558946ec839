"""compare.py: the FLOP counter against hand computations and the ELECTRA paper's totals, budgets and fractions,
a two-paper run end to end, resuming, and bad input."""
import json
import math

import numpy as np
import pytest
import torch

import albert
import bert
import compare
import electra
import finetune
import gpt
from conftest import ROOT, run_script

# A shape small enough to count by hand: 1 layer, hidden 4, 1 head, FFN 8, vocabulary 10, sequences of 3.
# One layer, per token:
#   attention: q, k, v 3 x (2*4*4 + 4) = 108; scores 2*4*3 = 24; softmax + dropout + scale (5 + 4 + 1) * 1 head * 3
#   = 30; weighted values 2*4*3 = 24; output projection 2*4*4 + 4 = 36; dropout 4*4 + residual 4 + LayerNorm 5*4 = 40
#   -> 262
#   feed-forward: up 2*4*8 = 64, bias 8, GELU 8*8 = 64; down 2*8*4 = 64, bias 4, dropout 16, residual 4,
#   LayerNorm 20 -> 244
#   -> 506
# Embeddings, per token: one-hot product 2*4*10 = 80, positions and segments 2*4*(3 + 2) = 40, sum 2*4 = 8,
#   LayerNorm 20, dropout 16 -> 164
# Encoder, per sequence: 3 * (164 + 506) = 2010
# Heads: masked-LM prediction 2*4*4 + 4 + 8*4 + 5*4 + 2*4*10 + 5*10 + 2*10 = 238; next-token prediction
#   2*4*10 + 5*10 + 2*10 = 150; binary decision 2*4*4 + 4 + 8*4 + 2*4 = 76
TINY = dict(layers=1, hidden=4, heads=1, ffn=8, vocab_size=10, seq_len=3, batch_size=2, grad_accum=1)
HAND = {
    "gpt": 2010 + 3 * 150,  # every position predicts the next token
    "bert": 2010 + 1 * 238 + 84,  # one masked slot + the NSP head on [CLS], two logits: 76 + 2*4
    "roberta": 2010 + 1 * 238,  # one masked slot, no sentence-pair head
    # ALBERT with E = 2: embeddings 2*2*10 + 2*2*5 + 4 + 10 + 8 = 82, + projection to 4: 2*2*4 + 4 = 20 -> 102;
    # encoder 3 * (102 + 506) = 1824; its MLM head goes back to E: 2*4*2 + 2 + 16 + 10 + 2*2*10 + 50 + 20 = 154;
    # the SOP head as BERT's NSP head, 84
    "albert": 1824 + 154 + 84,
    # ELECTRA, E = 4, generator hidden 2 (1 head, FFN 8): the discriminator 2010 + 3 tokens * 76 = 2238;
    # a generator layer per token: q, k, v 3*(2*2*2 + 2) = 30, scores 12, softmax etc. 30, values 12,
    # output 2*2*2 + 2 = 10, dropout/residual/LayerNorm 8 + 2 + 10 = 20 -> 114; FFN 32 + 8 + 64 + 32 + 2 + 8 + 2 + 10
    # = 158 -> 272; its embeddings 164 + projection 2*4*2 + 2 = 18 -> 182; encoder 3 * (182 + 272) = 1362;
    # one MLM prediction from width 2: 2*2*4 + 4 + 32 + 20 + 80 + 50 + 20 = 222
    "electra": 2238 + 1362 + 222,
}


def tiny_config(paper):
    mod = __import__(paper)
    extra = {"max_predictions": 1} if paper != "gpt" else {}
    extra.update({"albert": {"embed": 2}, "electra": {"embed": 4, "gen_size": 0.5}}.get(paper, {}))
    return mod.Config(**TINY, **extra)


@pytest.mark.parametrize("paper", compare.PAPERS)
def test_flops_per_step_match_a_hand_count(paper):
    # a step: batch 2, forward and backward (twice the forward)
    assert compare.step_flops(paper, tiny_config(paper)) == 2 * 2 * HAND[paper]


def test_albert_projects_its_embeddings_even_at_the_hidden_width():
    cfg = tiny_config("albert")
    wide = __import__("albert").Config(**TINY, max_predictions=1, embed=4)  # E = H: the projection is still there
    # embeddings at E = 4: 164 per token + the projection 2*4*4 + 4 = 36 -> 200; MLM head from 4 to 4: 238
    assert compare.step_flops("albert", wide) == 2 * 2 * (3 * (200 + 506) + 238 + 84)
    assert compare.step_flops("albert", cfg) != compare.step_flops("albert", wide)


def test_grad_accumulation_and_batch_scale_the_step():
    cfg = tiny_config("bert")
    base = compare.step_flops("bert", cfg)
    assert compare.step_flops("bert", bert.Config(**{**TINY, "batch_size": 6, "grad_accum": 2},
                                                  max_predictions=1)) == 6 * base


def test_the_papers_totals_come_out_of_the_counter():
    """ELECTRA Table 1's pretraining FLOPs, from each model's published settings. The table prints two significant
    digits, so the counts agree within the rounding (4%)."""
    S = compare.Shape

    def total(paper, shape, batch, steps, predictions, generator=None):
        return 2 * batch * steps * compare.sequence_flops(paper, shape, predictions, generator)

    small, small_gen = S(12, 256, 4, 1024, 30522, 128, 128), S(12, 64, 1, 256, 30522, 128, 128)
    base, base_gen = S(12, 768, 12, 3072, 30522, 512, 768), S(12, 256, 4, 1024, 30522, 512, 768)
    assert total("bert", small, 128, 1.45e6, 20) == pytest.approx(1.4e18, rel=0.04)  # BERT-Small
    assert total("bert", base, 256, 1e6, 80) == pytest.approx(6.4e19, rel=0.04)  # BERT-Base
    assert total("electra", base, 256, 766_000, 80, base_gen) == pytest.approx(6.4e19, rel=0.04)  # ELECTRA-Base
    # GPT-1 (the release counts its vocabulary as 40,000; every position predicts)
    assert total("gpt", S(12, 768, 12, 3072, 40000, 512, 768), 128, 960_800, 512) == pytest.approx(4.0e19, rel=0.04)
    # ELECTRA-Small: the table prints 1.4e18; the release's flops_computation.py gives 1.29e18 for these settings
    assert total("electra", small, 128, 1e6, 20, small_gen) == pytest.approx(1.29e18, rel=0.01)


def test_each_paper_gets_the_steps_the_budget_buys_with_one_shape():
    args = compare.build_parser().parse_args(["--budget", "3e12"])
    p = compare.plan(args)
    assert [r["paper"] for r in p["rows"]] == compare.PAPERS
    shared = ("layers", "hidden", "heads", "ffn", "vocab_size", "seq_len", "batch_size", "grad_accum", "schedule")
    first = p["rows"][0]["config"]
    for r in p["rows"]:
        cfg = r["config"]
        assert all(getattr(cfg, f) == getattr(first, f) for f in shared), r["paper"]
        assert r["flops_per_step"] == compare.step_flops(r["paper"], cfg)
        assert 3e12 - r["flops_per_step"] < r["steps"] * r["flops_per_step"] <= 3e12  # the budget, to within a step
        assert cfg.steps == r["steps"] and cfg.warmup == round(0.05 * r["steps"])  # one schedule shape
        assert r["kept"] == [r["steps"] // 8, r["steps"] // 4, r["steps"] // 2, r["steps"]]
        if r["paper"] != "gpt":
            assert cfg.max_predictions == round(20 / 128 * cfg.seq_len)  # 20 per 128 tokens for every masked LM
    steps = {r["paper"]: r["steps"] for r in p["rows"]}
    # the costlier objectives get fewer steps: GPT-1 predicts every position, ELECTRA runs a generator too,
    # ALBERT's narrow embeddings cost less than the others'
    assert steps["electra"] < steps["bert"] and steps["gpt"] < steps["bert"] < steps["albert"]
    # BERT's NSP head costs a little more than nothing: never more steps than RoBERTa
    assert steps["bert"] <= steps["roberta"]
    assert p["rows"][1]["flops_per_step"] > p["rows"][2]["flops_per_step"]


def test_a_set_value_changes_the_steps_at_the_same_budget():
    base = compare.plan(compare.build_parser().parse_args(["--papers", "electra", "--budget", "3e12"]))["rows"][0]
    half = compare.plan(compare.build_parser().parse_args(["--papers", "electra", "--budget", "3e12",
                                                           "--set", "electra.gen_size=0.5"]))["rows"][0]
    assert half["config"].gen_hidden == 64 and base["config"].gen_hidden == 32
    assert half["flops_per_step"] > base["flops_per_step"] and half["steps"] < base["steps"]


@pytest.mark.parametrize("paper", ["bert", "roberta", "albert", "electra"])
def test_a_masking_rate_set_is_the_rate_trained(paper):
    """--set PAPER.mask_prob=0.4 masks 40% of a sequence's tokens: the cap on masked slots, which the comparison
    sets for all, follows the rate (and with it the FLOPs of a step)."""
    import importlib

    mod = importlib.import_module(paper)
    rows = {rate: compare.plan(compare.build_parser().parse_args(
        ["--papers", paper, "--budget", "3e12"] + (["--set", f"{paper}.mask_prob={rate}"] if rate else [])))["rows"][0]
        for rate in (None, 0.4)}
    cfg = rows[0.4]["config"]
    B, T = 64, cfg.seq_len
    assert rows[None]["config"].max_predictions == round(T * 20 / 128)  # BERT's release: 20 at length 128
    assert cfg.max_predictions == round(T * 20 / 128 * 0.4 / 0.15)
    assert rows[0.4]["flops_per_step"] > rows[None]["flops_per_step"]
    ids = np.full((B, T), 100)  # a row of plain tokens: every position may be masked
    split = {"never_masked": np.array([0, 1, 2, 3, 4]), "mask_id": 4, "normal": np.arange(5, 200), "pad_id": 0,
             "word_start": np.ones(200, bool)}
    masked = mod.mask_tokens(ids, np.arange(B), 0, split, cfg)
    assert abs((masked[2] != -100).sum() / (B * T) - 0.4) < 0.02, paper


@pytest.fixture(scope="module")
def small_task(tmp_path_factory):
    """A fine-tuning task small enough for the suite: is a sentence about files or about numbers."""
    folder = tmp_path_factory.mktemp("task")
    files = ["open the file and read it", "write the file to disk", "the path of the file", "close the file",
             "the file is missing", "remove the file from the folder"]
    numbers = ["add the two numbers", "the sum of the values", "divide the number by two", "an integer or a float",
               "multiply the numbers", "round the number down"]
    rows = [(s, "files") for s in files] + [(s, "numbers") for s in numbers]
    for name, part in (("train", rows), ("dev", rows[::2])):
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in part))
    return folder


def run_compare(corpus, task, out, *extra):
    return compare.main(["--papers", "bert,electra", "--budget", "3e11", "--seeds", "2", "--task", str(task),
                         "--data", str(corpus), "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def finished(corpus, small_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert run_compare(corpus, small_task, out) == 0
    return out


def test_a_two_paper_run_writes_the_table_json_and_plot(finished):
    results = json.loads((finished / "results.json").read_text())
    assert list(results["papers"]) == ["bert", "electra"]
    dev = results["dev_examples"]
    for paper, r in results["papers"].items():
        assert r["steps"] * r["flops_per_step"] <= 3e11 < (r["steps"] + 1) * r["flops_per_step"]
        assert list(r["fractions"]) == ["1/8", "1/4", "1/2", "1"]
        for name, f in r["fractions"].items():
            assert f["flops"] == f["steps"] * r["flops_per_step"]
            assert 0 <= f["probe"] <= 1 and round(f["probe"] * dev) == pytest.approx(f["probe"] * dev)  # k of dev
            assert math.isfinite(f["pretraining"]["val_loss"])  # evaluated at the kept step
        assert r["probe"]["mean"] == r["fractions"]["1"]["probe"]
        assert r["probe_gain"]["mean"] == pytest.approx(r["probe"]["mean"] - r["probe_floor"]["mean"])
        for tuned in (r["finetuned"], r["finetuned_floor"]):
            assert len(tuned["each"]) == 2 and all(0 <= v <= 1 for v in tuned["each"])
        gain = r["finetune_gain"]
        assert gain["low"] <= gain["mean"] <= gain["high"]
        assert gain["mean"] == pytest.approx(r["finetuned"]["mean"] - r["finetuned_floor"]["mean"])
    assert results["papers"]["electra"]["discriminator"] < results["papers"]["electra"]["parameters"]
    versus = results["versus_bert"]["electra - bert"]
    assert versus["probe"]["mean"] == pytest.approx(results["papers"]["electra"]["probe"]["mean"]
                                                     - results["papers"]["bert"]["probe"]["mean"])
    for r in results["papers"].values():  # the word-order probe: k of the pairs right, at each kept step
        for f in r["fractions"].values():
            assert round(f["order_probe"] * results["order_pairs"]) == pytest.approx(f["order_probe"]
                                                                                      * results["order_pairs"])
        assert r["order_gain"]["mean"] == pytest.approx(r["order"]["mean"] - r["order_floor"]["mean"])
    assert results["order_pairs"] > 0 and "order" in results["versus_bert"]["electra - bert"]
    table = (finished / "results.md").read_text()
    assert "| bert |" in table and "| electra |" in table and "ELECTRA-Small" in table and "Word order" in table
    assert "| electra - bert |" in table and "Reading (written by the run" in table
    assert (finished / "score_vs_flops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_command_gives_the_same_results_in_another_process(finished, corpus, small_task, tmp_path):
    """Cell for cell: the tokenizers, the pretraining and the fine-tuning are functions of the command. The second
    run is another process, whose hash maps (which the tokenizer trainers follow) iterate in another order."""
    done = run_script("compare.py", "--papers", "bert,electra", "--budget", "3e11", "--seeds", "2",
                      "--task", small_task, "--data", corpus, "--out", tmp_path, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    ours, theirs = (json.loads((out / "results.json").read_text()) for out in (finished, tmp_path))
    for results in (ours, theirs):
        for r in results["papers"].values():
            assert r.pop("pretraining_seconds") > 0
    assert ours == theirs
    # BERT and ELECTRA train the same WordPiece vocabulary on the same text, as the ELECTRA paper gives them
    assert (finished / "pretrain" / "bert" / "tokenizer.json").read_text() == (
        tmp_path / "pretrain" / "electra" / "tokenizer.json").read_text()


def test_the_interval_holds_the_mean_and_leaves_out_zero_only_for_a_clear_difference():
    clear = compare.interval([1] * 30 + [0] * 10)  # a model right where the other is wrong, 30 times of 40
    assert clear["mean"] == 0.75 and 0 < clear["low"] < 0.75 < clear["high"] <= 1 and clear["beyond_noise"]
    mixed = compare.interval([1, -1] * 20 + [1])
    assert mixed["low"] < 0 < mixed["high"] and not mixed["beyond_noise"]
    assert compare.interval([0.02, 0.02, 0.02]) == {"mean": 0.02, "low": 0.02, "high": 0.02, "beyond_noise": True}
    assert compare.interval([1, -1] * 20 + [1]) == mixed  # the same draws every time
    assert not compare.interval([0.05])["beyond_noise"]  # one fine-tuning seed: no spread to judge by


@pytest.mark.floats
def test_the_probe_is_deterministic_and_reads_what_the_features_hold():
    """Sentences of one template, a fruit (class 0) or a number (class 1) in them; dev has other words. A model
    whose embeddings mark the class words is read perfectly; one whose embeddings are all zero gives every
    sentence the same features, and the probe one answer: half right."""
    words = [["apple", "pear", "plum", "fig", "lime", "date"], ["seven", "nine", "four", "five", "six", "ten"]]
    make = lambda picks: [(f"the {w} is on the table", None, c) for c in (0, 1) for w in picks(words[c])]
    task = {"name": "toy", "train": make(lambda w: w[:4]), "dev": {"dev": make(lambda w: w[4:])},
            "labels": ["fruit", "number"], "metrics": ["accuracy"], "regression": False}
    torch.manual_seed(0)
    model = bert.Model(bert.PRESETS["tiny"])
    model.tokenizer = bert.train_tokenizer([[a for a, _, _ in task["train"] + task["dev"]["dev"]] * 5],
                                           bert.PRESETS["tiny"])
    cpu = torch.device("cpu")
    with torch.no_grad():
        model.embeddings.tokens.weight.zero_()
        model.embeddings.positions.weight.zero_()
    assert sum(compare.probe(bert, model, task, cpu)) == 2
    with torch.no_grad():
        for c in (0, 1):
            for w in words[c]:
                model.embeddings.tokens.weight[model.tokenizer.token_to_id(w), 0] = 1.0 if c == 0 else -1.0
    first = compare.probe(bert, model, task, cpu)
    assert first == [1, 1, 1, 1]
    assert compare.probe(bert, model, task, cpu) == first  # deterministic


def test_the_word_order_pairs_swap_two_neighbours_of_each_sentence():
    task = {"train": [("one two three four five six", None, 0), ("a a a a", None, 1)],
            "dev": {"dev": [(" ".join(f"w{i}" for i in range(30)), None, 0)]}}
    order = compare.word_order(task)
    assert len(order["train"]) == 1  # "a a a a" has no two different neighbours to swap
    for original, swapped in order["train"] + order["dev"]:
        a, b = original.split(), swapped.split()
        where = [i for i in range(len(a)) if a[i] != b[i]]
        assert sorted(a) == sorted(b) and len(where) == 2 and where[1] == where[0] + 1 < 12
        assert (b[where[0]], b[where[1]]) == (a[where[1]], a[where[0]])
    assert compare.word_order(task) == order  # drawn the same every time


@pytest.mark.floats
def test_the_word_order_probe_needs_positions_and_is_deterministic():
    """A model without position embeddings sees a sentence and its swapped copy as the same bag of words: the
    features' difference is rounding noise (the mean adds the same rows in another order, and other CPUs'
    kernels round differently). A probe given no difference at all answers every pair alike, and the originals
    come first in every other pair, so it is right exactly half of the time."""
    sentences = [f"the {a} reads the {b} from the {c}" for a in ("file", "path", "line", "word")
                 for b in ("disk", "folder", "module") for c in ("cache", "table")]
    task = {"train": [(t, None, 0) for t in sentences[:16]], "dev": {"dev": [(t, None, 0) for t in sentences[16:]]}}
    order = compare.word_order(task)
    torch.manual_seed(0)
    model = bert.Model(bert.PRESETS["tiny"])
    model.tokenizer = bert.train_tokenizer([sentences * 5], bert.PRESETS["tiny"])
    cpu = torch.device("cpu")
    first = compare.order_probe(bert, model, order, cpu)
    assert len(first) == len(order["dev"]) and compare.order_probe(bert, model, order, cpu) == first

    def difference():  # the largest gap between a sentence's features and its swapped copy's, and their scale
        texts = [(t, None, 0) for pair in order["train"] for t in pair]
        h = compare.features(bert, model, model.tokenizer.token_to_id("[PAD]"), texts, 32, cpu)[0]
        return (h[0::2] - h[1::2]).abs().max().item(), h.abs().max().item()
    gap, scale = difference()
    assert gap > 1e-3 * scale  # with positions, the order shows
    with torch.no_grad():
        model.embeddings.positions.weight.zero_()
    gap, scale = difference()
    assert gap < 1e-5 * scale  # without, only rounding is left (fp32: about 1e-7 a sum)
    n = len(order["dev"])
    labels = (torch.arange(n) % 2 == 0).long()  # order_probe's labels: the original first in every other pair
    assert sum(compare.linear_probe(torch.zeros(n, 8), labels, torch.zeros(n, 8), labels, 2)) == n // 2


def test_the_default_corpus_of_a_comparison_holds_no_sentence_of_the_task():
    task = finetune.builtin_task()
    docs = gpt.default_corpus()
    kept = compare.corpus_without(docs, task)
    sentences = {t for a, _, _ in task["train"] + task["dev"]["dev"] + task["test"] for t in (a,)}
    before, after = [s for d in docs for s in d], [s for d in kept for s in d]
    assert sum(s in sentences for s in before) > 1000  # the task's sentences come from these docstrings
    assert not any(s in sentences for s in after)
    assert len(after) == sum(s not in sentences for s in before)  # nothing else is lost


def test_albert_holds_fewer_weights_than_bert_but_the_same_activations():
    """ALBERT's downsizing at one shape: shared layers and a factorised embedding cut the parameters and their
    training state (16 bytes each), not what the forward keeps for the backward; dropout keeps its masks too."""
    shape = dict(layers=2, hidden=128, heads=2, ffn=512, vocab_size=4096, seq_len=32, batch_size=8, dropout=0.0)
    b = compare.memory("bert", bert.Config(**shape))
    a = compare.memory("albert", albert.Config(**shape, embed=64))
    assert a["parameters"] < 0.6 * b["parameters"] and b["state"] == 16 * b["parameters"]
    assert a["activations"] == pytest.approx(b["activations"], rel=0.05)
    assert compare.memory("bert", bert.Config(**dict(shape, dropout=0.1)))["activations"] > 1.1 * b["activations"]
    deeper = compare.memory("bert", bert.Config(**dict(shape, layers=4)))
    assert deeper["activations"] > 1.8 * b["activations"]  # a layer's work is kept, layer by layer


def test_the_small_plan_is_electra_against_bert_without_nsp_and_fits_an_hour(tmp_path):
    r = run_script(ROOT / "compare.py", "--size", "small", "--device", "cuda", "--dry-run", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    rows = [line.split()[0] for line in r.stdout.splitlines() if line.split()[:1] and line.split()[0] in compare.PAPERS]
    assert rows == ["gpt", "bert", "electra"] and "bert.next_sentence=False" in r.stdout
    args = compare.build_parser().parse_args(["--size", "small"])
    p = compare.plan(args)
    assert next(row for row in p["rows"] if row["paper"] == "bert")["config"].next_sentence is False
    task, cuda = {"train": [None] * 600}, torch.device("cuda")
    assert compare.total_estimate(p, args, task, cuda) <= 3600
    smoke = compare.build_parser().parse_args(["--size", "small", "--budget", "1.5e16"])
    assert compare.total_estimate(compare.plan(smoke), smoke, task, cuda) <= 330
    again = compare.build_parser().parse_args(["--size", "small", "--set", "bert.next_sentence=True"])
    assert next(row for row in compare.plan(again)["rows"] if row["paper"] == "bert")["config"].next_sentence


def test_the_cross_evaluation_pairs_are_the_other_tasks_examples():
    """ALBERT Table 5: BERT's NSP head gets sentence-order pairs (the in-order pairs, every other one swapped);
    ALBERT's SOP head gets next-sentence pairs (every other B from another pair, no longer than the B it replaces)."""
    a = np.array([[0, 4], [10, 13], [20, 26], [30, 32], [40, 45], [50, 51]])
    b = np.array([[4, 9], [13, 15], [26, 27], [32, 38], [45, 46], [51, 60]])
    val = {"a": a, "b": b, "pair_labels": np.array([0, 0, 1, 0, 0, 0])}  # the third is another task's negative
    kept = [0, 1, 3, 4, 5]
    sop = compare.other_task_pairs("bert", val)
    assert sop["pair_labels"].tolist() == [0, 1, 0, 1, 0]
    for i, k in enumerate(kept):
        want = (a[k], b[k]) if i % 2 == 0 else (b[k], a[k])  # swapped: B's tokens first
        assert sop["a"][i].tolist() == want[0].tolist() and sop["b"][i].tolist() == want[1].tolist()
    nsp = compare.other_task_pairs("albert", val)
    assert nsp["pair_labels"].tolist() == [0, 1, 0, 1, 0] and (nsp["a"] == a[kept]).all()
    for i, k in enumerate(kept):
        start, end = nsp["b"][i]
        if i % 2 == 0:
            assert [start, end] == b[k].tolist()
        else:  # another pair's B, from its start, cut to this B's length
            assert start in b[kept][:, 0] and start != b[k][0] and end - start <= b[k][1] - b[k][0]


def test_bert_and_albert_together_add_the_cross_evaluation(corpus, small_task, tmp_path):
    assert compare.main(["--papers", "bert,albert", "--budget", "3e11", "--seeds", "1", "--task", str(small_task),
                         "--data", str(corpus), "--out", str(tmp_path), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for paper in ("bert", "albert"):
        cross = results["cross_evaluation"][paper]
        assert cross["pairs"] > 0 and 0 <= cross["other_task"] <= 1 and 0 <= cross["own_task"] <= 1
    # its own task: the same head and pairs as the pretraining's last validation
    for paper, head in (("bert", "val_nsp_acc"), ("albert", "val_sop_acc")):
        last = results["papers"][paper]["fractions"]["1"]["pretraining"]  # logged in bf16, scored again in fp32
        assert results["cross_evaluation"][paper]["own_task"] == pytest.approx(last[head], abs=0.02)
    assert "ALBERT Table 5" in (tmp_path / "results.md").read_text()


def test_the_kept_checkpoints_are_the_models_at_their_steps(finished):
    results = json.loads((finished / "results.json").read_text())
    for paper, r in results["papers"].items():
        for f in r["fractions"].values():
            state = torch.load(finished / "pretrain" / paper / f"ckpt-{f['steps']}.pt", map_location="cpu",
                               weights_only=False)
            assert state["step"] == f["steps"]
        first, last = (torch.load(finished / "pretrain" / paper / f"ckpt-{r['fractions'][k]['steps']}.pt",
                                  map_location="cpu", weights_only=False)["model"] for k in ("1/8", "1"))
        assert any(not torch.equal(first[k], last[k]) for k in first)  # training went on after the first copy


def test_a_rerun_skips_finished_stages_and_redoes_a_missing_one(finished, corpus, small_task, capsys):
    import shutil

    ckpt = finished / "pretrain" / "bert" / "ckpt.pt"
    before = ckpt.stat().st_mtime_ns
    shutil.rmtree(finished / "finetune" / "electra")  # as if killed before that stage finished
    capsys.readouterr()
    assert run_compare(corpus, small_task, finished) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and sum("already done" in line for line in lines) == 5
    assert "fine-tuning electra" in next(line for line in lines if "already done" not in line)
    assert ckpt.stat().st_mtime_ns == before


def test_a_stopped_pretraining_resumes_from_its_checkpoint(finished, corpus, small_task):
    folder = finished / "pretrain" / "electra"
    steps = json.loads((finished / "results.json").read_text())["papers"]["electra"]["steps"]
    record = json.loads((folder / "stage.json").read_text())
    (folder / "stage.json").write_text(json.dumps({**record, "done": False}))  # as if stopped after its checkpoint
    assert run_compare(corpus, small_task, finished) == 0
    log = (folder / "train.log").read_text()
    assert log.count(f"step 0 of {steps}") == 1  # trained from scratch once ...
    assert log.count(f"step {steps} of {steps}") == 1  # ... and this time went on from the checkpoint, not step 0
    assert json.loads((folder / "stage.json").read_text())["done"]


def test_other_settings_in_the_same_out_are_refused(finished, corpus, small_task, capsys):
    assert compare.cli(["--papers", "bert", "--budget", "4e11", "--seeds", "2", "--task", str(small_task), "--data",
                        str(corpus), "--out", str(finished), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "other settings" in err[0]


@pytest.mark.parametrize("args, message", [
    (["--papers", "bert,t5"], "unknown paper 't5'"),
    (["--budget", "1e9"], "the 1/8 checkpoint needs 8 or more"),
    (["--budget", "-5"], "--budget must be a positive"),
    (["--set", "electra.nonsense=1"], "has no field 'nonsense'"),
    (["--set", "electra.gen_size"], "write PAPER.FIELD=VALUE"),
    (["--size", "huge"], "--size 'huge'"),
    (["--set", "electra.hidden=64"], "sets hidden the same for every paper"),
    (["--set", "electra.gen_size=0"], "leaves no model to build"),
    (["--set", "electra.gen_size=0.001"], "leaves no model to build"),
    (["--set", "electra.max_len=16"], "leaves no model to build"),
    (["--set", "bert.lr=1e400"], "give a number of 0 or more"),
    (["--set", "bert.dropout=True"], "give a number of 0 or more"),
    (["--set", "bert.next_sentence=0"], "give True or False"),
    (["--set", "bert.lr=-1"], "give a number of 0 or more"),
    (["--set", "bert.eval_interval=5"], "sets eval_interval the same"),
    (["--set", "electra.layers=1.5"], "sets layers the same"),
    (["--set", "electra.lr=fast"], "is not a number"),
    (["--set", "bert.disc_weight=2"], "has no field 'disc_weight'"),
    (["--papers", "bert", "--set", "electra.lr=1e-3"], "is not among --papers"),
    (["--seeds", "0"], "--seeds must be 1 or more"),
    (["--data", "/nonexistent/corpus.txt"], "--data: nothing at /nonexistent/corpus.txt"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert compare.cli(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_the_machine_lacks_is_one_error_line(tmp_path, capsys):
    assert compare.cli(["--papers", "bert", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: --device cuda: this machine has none"
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_is_one_error_line(tmp_path, small_task, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert compare.cli(["--papers", "bert", "--budget", "3e11", "--task", str(small_task),
                        "--out", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    r = run_script(ROOT / "compare.py", "--dry-run", "--out", tmp_path / "out")
    assert r.returncode == 0 and not (tmp_path / "out").exists()
    for paper in compare.PAPERS:
        assert any(line.startswith(paper + " ") for line in r.stdout.splitlines())
    assert "total about" in r.stdout


def test_keep_is_checked_by_the_paper_scripts(tmp_path):
    r = run_script(ROOT / "gpt.py", "--train", "--keep", "two", "--out", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip() == "error: --keep takes step numbers separated by commas, got 'two'"
    assert not (tmp_path / "run").exists()


def test_the_models_do_the_matrix_products_the_counter_assumes():
    """The counter's premises, checked on the models themselves with torch's FLOP counter (which counts matrix
    products only, and on a CPU not those inside scaled-dot-product attention): the vocabulary projection at the
    masked slots only (every position for GPT-1), ELECTRA's generator at its width, the projections of E."""
    from torch.utils.flop_counter import FlopCounterMode

    B, T, P, h, f, V = 2, 6, 2, 8, 16, 50
    shape = dict(layers=1, hidden=h, heads=1, ffn=f, vocab_size=V, seq_len=T, batch_size=B, grad_accum=1, dropout=0.0)

    def lin(n_in, n_out, rows):  # forward FLOPs of a (rows, n_in) x (n_in, n_out) product
        return 2 * n_in * n_out * rows

    layer = lin(h, 3 * h, B * T) + lin(h, h, B * T) + lin(h, f, B * T) + lin(f, h, B * T)
    mlm = lin(h, h, B * P) + lin(h, V, B * P)  # the head's dense layer, then the vocabulary, at the P slots
    pair = lin(h, h, B) + lin(h, 2, B)  # the pooler and the two-way classifier on [CLS]
    g, e = 4, 6  # ELECTRA: a generator 4 wide, embeddings 6 wide: both encoders project E to their width
    expected = {
        "gpt": layer + lin(h, V, B * T),
        "bert": layer + mlm + pair,
        "roberta": layer + mlm,
        "albert": lin(e, h, B * T) + layer + lin(h, e, B * P) + lin(e, V, B * P) + pair,
        "electra": (lin(e, h, B * T) + layer + lin(h, h, B * T) + lin(h, 1, B * T)  # the discriminator
                    + lin(e, g, B * T) + lin(g, 3 * g, B * T) + lin(g, g, B * T) + lin(g, 4 * g, B * T)
                    + lin(4 * g, g, B * T) + lin(g, e, B * P) + lin(e, V, B * P)),  # the generator
    }
    ids = torch.randint(5, V, (B, T))
    batch = {"input_ids": ids, "targets": ids, "token_type_ids": torch.zeros(B, T, dtype=torch.long),
             "attention_mask": torch.ones(B, T, dtype=torch.long), "mlm_positions": torch.tensor([[1, 2], [3, 4]]),
             "mlm_labels": torch.tensor([[7, 8], [9, 10]]), "pair_labels": torch.tensor([0, 1]),
             "content": torch.ones(B, T, dtype=torch.bool)}
    for paper in compare.PAPERS:
        mod = __import__(paper)
        extra = {"albert": {"embed": e}, "electra": {"embed": e, "gen_size": g / h}}.get(paper, {})
        cfg = mod.Config(**shape, **extra, **({} if paper == "gpt" else {"max_predictions": P}))
        torch.manual_seed(0)
        model = mod.Model(cfg).train()
        with FlopCounterMode(display=False) as counter:
            mod.compute_loss(model, batch, cfg)
        counts = counter.get_flop_counts()["Global"]
        measured = sum(v for op, v in counts.items() if str(op) in ("aten.addmm", "aten.mm"))
        assert measured == expected[paper], paper
        # and the counter charges the same products, times the tokens or slots it says
        s, generator, predictions = compare.shapes_of(paper, cfg)
        assert predictions == (T if paper == "gpt" else P)
        assert (generator.hidden, generator.ffn) == (g, 4 * g) if paper == "electra" else generator is None


def test_a_stage_is_restarted_refused_or_redone_by_what_it_holds(tmp_path):
    folder = tmp_path / "stage"
    folder.mkdir()
    assert compare.read_stage(folder, "new", "a run") is None  # never started
    compare.write_stage(folder, {"key": "old", "done": False})
    assert compare.read_stage(folder, "new", "a run") is None  # stopped before its first checkpoint: start again
    (folder / "ckpt.pt").write_bytes(b"")
    with pytest.raises(compare.UserError, match="made with other settings"):  # checkpoints of other settings
        compare.read_stage(folder, "new", "a run")
    assert compare.read_stage(folder, "old", "a run") == {"key": "old", "done": False}  # the same: resume it
    compare.write_stage(folder, {"key": "old", "done": True})
    assert compare.read_stage(folder, "new", "a fine-tuning", redo=True) is None  # fine-tuning: done again
