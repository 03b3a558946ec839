"""bert.py: parity with BertForPreTraining, the paper's sizes, the release's data and masking, NSP, static masks."""

import dataclasses
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import conftest
import bert

DIFF_BUDGET = 661  # `diff gpt.py bert.py`: 580, +4 citations that name their paper, +69 for 100 columns,
# +8 for lm_loss, GPT-1's plain loss where compiled or on a GPU
# (+10 with the deterministic tokenizer training: WordPiece's "##" pieces where GPT-1 numbers its "</w>" ones)
# (+3 with bert.py's next_sentence switch, the masked LM alone: the ELECTRA release's BERT baseline)


def tiny(**changes):
    return dataclasses.replace(bert.PRESETS["tiny"], **changes)


@pytest.fixture(scope="module")
def tokenizer_file(corpus, tmp_path_factory):
    return conftest.tokenizer_file(bert, corpus, tmp_path_factory.mktemp("bert-tokenizer"))


@pytest.fixture(scope="module")
def data(corpus, tokenizer_file, tmp_path_factory):
    return conftest.split_data(bert, corpus, tokenizer_file, tmp_path_factory.mktemp("bert-data"))


def train_args(out, corpus, tokenizer_file, *extra):
    Path(out).mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer_file, Path(out) / "tokenizer.json")  # runs compared with each other share a tokenizer
    return bert.build_parser().parse_args(["--train", "--size", "tiny", "--device", "cpu", "--out", str(out),
                                           "--data", str(corpus), *map(str, extra)])


# --- the model against the reference ---


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    hf = BertForPreTraining(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=24,
                                       attn_implementation="eager")).eval()
    with torch.no_grad():  # a non-trivial decoder bias and LayerNorms, so that mapping mistakes show
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("bert-ref")
    hf.save_pretrained(path)
    return hf, path


def inputs():
    torch.manual_seed(1)
    ids = torch.randint(5, 99, (2, 12))
    types = torch.tensor([[0] * 5 + [1] * 7, [0] * 4 + [1] * 4 + [0] * 4])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0  # padding
    ids[1, 8:] = 0
    return ids, mask, types


def check_parity(ours, hf):
    ids, mask, types = inputs()
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        hidden = ours.encode(ids, mask, types)
        mlm, nsp = ours(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(mlm[real], ref.prediction_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(nsp, ref.seq_relationship_logits, atol=1e-5, rtol=0)


@pytest.mark.floats
def test_parity_with_bert_for_pretraining(reference):
    hf, path = reference
    ours = bert.Model.from_pretrained(path).eval()
    check_parity(ours, hf)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


def test_legacy_checkpoint_names_without_prefix_or_decoder_bias(reference, tmp_path):
    hf, path = reference
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    legacy = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    sd = {}
    for k, v in hf.state_dict().items():
        if k != "cls.predictions.decoder.weight":
            for new, old in legacy.items():
                k = k.replace(new, old)
            sd[k.removeprefix("bert.")] = v
    sd["embeddings.position_ids"] = torch.arange(24)[None]  # an old buffer, ignored
    torch.save(sd, tmp_path / "pytorch_model.bin")
    check_parity(bert.Model.from_pretrained(tmp_path).eval(), hf)


@pytest.mark.floats
def test_encoder_only_checkpoint_gets_fresh_heads_and_a_warning(reference, tmp_path, capsys):
    hf, path = reference
    hf.bert.save_pretrained(tmp_path)  # a BertModel: no MLM or NSP head
    ours = bert.Model.from_pretrained(tmp_path).eval()
    err = capsys.readouterr().err
    assert "has no head, mlm.dense, mlm.ln, nsp: freshly initialised" in err and "pooler" not in err
    ids, mask, types = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(ids, mask, types)[mask.bool()],
                                   hf.bert(ids, mask, types).last_hidden_state[mask.bool()], atol=1e-5, rtol=0)


def test_vocab_txt_tokenizer(data, tmp_path):
    _, tok = data
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab))
    loaded = bert.load_tokenizer(tmp_path)
    text = "The Interpreter raises an Exception [MASK] here."
    assert loaded.encode(text).ids == tok.encode(text).ids
    assert tok.token_to_id("[PAD]") == 0 and tok.encode("[MASK]", add_special_tokens=False).ids == [4]


@pytest.mark.parametrize("size, count", [("base", 110_106_428), ("large", 336_226_108)])
def test_paper_sizes_have_the_reference_parameter_counts(size, count):
    with torch.device("meta"):
        model = bert.Model(bert.PRESETS[size])
    assert model.num_params() == count
    assert model.head.weight is model.embeddings.tokens.weight


def test_small_berts_match_the_reference_classes():
    from transformers import BertConfig, BertForPreTraining

    for size in ("mini", "small", "medium"):
        cfg = bert.PRESETS[size]
        with torch.device("meta"):
            ref = BertForPreTraining(BertConfig(num_hidden_layers=cfg.layers, hidden_size=cfg.hidden,
                                                num_attention_heads=cfg.heads, intermediate_size=cfg.ffn))
            assert bert.Model(cfg).num_params() == sum(p.numel() for p in ref.parameters())


@pytest.mark.floats
def test_padding_leaves_real_positions_unchanged():
    model = bert.Model(tiny()).eval()
    ids = torch.randint(5, 4096, (1, 10))
    types = torch.tensor([[0] * 5 + [1] * 5])
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        a = model.encode(ids, None, types)
        padded_types = torch.cat([types, torch.zeros(1, 6, dtype=torch.long)], 1)
        b = model.encode(padded, torch.tensor([[1] * 10 + [0] * 6]), padded_types)
    torch.testing.assert_close(b[:, :10], a, atol=1e-5, rtol=0)


# --- data and masking ---


def test_instances_are_cls_a_sep_b_sep_with_segment_ids(data):
    split = data[0]["train"]
    cls_id, sep_id = split["special"][2], split["special"][3]
    for ids, types in zip(split["input_ids"][:200], split["token_type_ids"][:200]):
        n = int((ids != 0).sum())
        seps = np.flatnonzero(ids == sep_id)
        assert ids[0] == cls_id and len(seps) == 2 and seps[1] == n - 1 and 1 < seps[0] < n - 2
        assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:n] == 1).all() and (types[n:] == 0).all()


def test_b_follows_a_in_its_document_exactly_when_labelled_so(data):
    split = data[0]["train"]
    stream = split["tokens"].astype(np.int32).tobytes()  # the split's sentences, back to back
    doc_of_sentence = np.repeat(np.arange(len(split["documents"])), np.diff(split["documents"], axis=1)[:, 0])

    def where(ids):
        """Token positions where `ids` occur in the stream."""
        needle, found, at = ids.astype(np.int32).tobytes(), [], stream.find(ids.astype(np.int32).tobytes())
        while at >= 0:
            found += [at // 4] if at % 4 == 0 else []
            at = stream.find(needle, at + 1)
        return found

    def document(position):
        return doc_of_sentence[np.searchsorted(split["sentences"][:, 1], position, side="right")]

    sep, checked = split["special"][3], [0, 0]
    for ids, label in zip(split["input_ids"][:300], split["pair_labels"][:300]):
        first, second = np.flatnonzero(ids == sep)
        a, b = where(ids[1:first]), where(ids[first + 1:second])
        if len(a) != 1 or len(b) != 1:
            continue  # a segment that occurs twice in the corpus cannot be placed
        if label == 0:  # the true continuation: after A in A's document (truncation may cut the seam)
            assert document(a[0]) == document(b[0]) and b[0] > a[0]
        else:  # a random next segment: from another document
            assert document(a[0]) != document(b[0])
        checked[label] += 1
    assert min(checked) > 50


def test_nsp_labels_are_balanced(data):
    nsp = data[0]["train"]["pair_labels"]
    assert len(nsp) > 1000 and 0.4 < nsp.mean() < 0.6


def test_masking_statistics(data):
    split = data[0]["train"]
    ids = split["input_ids"][np.arange(4000) % len(split["pair_labels"])].astype(np.int64)  # rows again, other keys
    new, positions, labels = bert.mask_tokens(ids, np.arange(4000), 0, split, tiny(max_predictions=128))  # no cap
    chosen = labels != -100
    rows = np.broadcast_to(np.arange(4000)[:, None], positions.shape)[chosen]
    at = positions[chosen]
    assert len(set(zip(rows.tolist(), at.tolist()))) == chosen.sum()  # no position chosen twice
    assert not np.isin(ids[rows, at], split["never_masked"]).any()  # never [CLS], [SEP], [PAD]
    assert (labels[chosen] == ids[rows, at]).all()
    untouched = np.ones_like(ids, dtype=bool)
    untouched[rows, at] = False
    assert (new[untouched] == ids[untouched]).all()
    out = new[rows, at]
    assert not np.isin(out[out != split["mask_id"]], split["special"]).any()  # random tokens: never specials
    candidates = (~np.isin(ids, split["never_masked"])).sum()
    assert chosen.sum() / candidates == pytest.approx(0.15, abs=0.005)
    assert (out == split["mask_id"]).mean() == pytest.approx(0.8, abs=0.01)
    assert (out == ids[rows, at]).mean() == pytest.approx(0.1, abs=0.01)  # (a random draw of the same token counts too)
    assert ((out != ids[rows, at]) & (out != split["mask_id"])).mean() == pytest.approx(0.1, abs=0.01)
    capped = bert.mask_tokens(ids[:50], np.arange(50), 0, split, tiny(max_predictions=3))[2]
    assert capped.shape == (50, 3) and ((capped != -100).sum(1) == 3).all()


@pytest.mark.parametrize("script", ["bert", "albert"])
def test_a_short_target_length_holds_for_a_whole_document_pass(script, tmp_path):
    """The release draws the target length once per document and duplication pass (short with short_seq_prob), so
    every chunk of that pass closes at the same length; a draw per chunk would mix lengths within a pass."""
    module = importlib.import_module(script)
    D, S, L = 6, 60, 10  # documents of 60 sentences of 10 tokens; document d's tokens are 5 + 100 d ...
    tokens = np.concatenate([5 + 100 * d + np.arange(S * L) % 100 for d in range(D)])
    split = {"tokens": tokens, "sentences": np.array([(i * L, i * L + L) for i in range(D * S)]),
             "documents": np.array([(d * S, d * S + S) for d in range(D)])}
    cfg = dataclasses.replace(module.PRESETS["tiny"], short_seq_prob=0.5, dupe_factor=10)
    special = {"pad": 0, "cls": 2, "sep": 3}
    out = conftest.made_instances(module, split, cfg, special, tmp_path, np.random.default_rng(0))
    lengths = (out["input_ids"] != 0).sum(1)
    a_doc = (out["input_ids"][:, 1] - 5) // 100  # ALBERT's swapped pairs start with the other segment, same document
    passes = np.split(np.arange(len(lengths)), np.flatnonzero(np.diff(a_doc)) + 1)  # one document, one pass each
    assert len(passes) == 10 * D
    random_b = out.get("pair_labels", np.zeros(len(lengths), int))  # BERT's B from another document fills up too
    seen = []
    for group in passes:
        inner = [i for i in group[:-1] if random_b[i] == 0]  # B = the rest of the chunk; the last chunk is cut short
        assert len(set(lengths[inner].tolist())) <= 1
        seen += lengths[inner].tolist()
    assert min(seen) < 60 and max(seen) == tiny().seq_len  # short passes and full ones both occur


def test_unk_may_be_masked_cls_sep_and_padding_never(data):
    split = data[0]["train"]
    unk, cls_id, sep_id = split["special"][1:4]
    ids = np.array([[cls_id] + [unk] * 40 + [sep_id] + [0] * 86] * 50)
    _, positions, labels = bert.mask_tokens(ids, np.arange(50), 0, split, tiny())
    chosen = labels != -100
    assert (labels[chosen] == unk).all() and chosen.sum() == 50 * 6  # 15% of the 40 real, maskable tokens


@pytest.mark.parametrize("std", [0.02, 0.08])
def test_weights_are_initialised_from_a_normal_truncated_at_two_deviations(std):
    model = bert.Model(tiny(init_std=std))
    kinds = (torch.nn.Linear, torch.nn.Embedding)
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, kinds)])
    assert weights.abs().max() <= 2 * std and 0.75 * std < weights.std() < 0.95 * std  # a cut N(0, σ) has std 0.88σ


def test_masks_are_static(data):
    split = data[0]["train"]
    n = len(split["pair_labels"])
    k = bert.epoch_order(n, 0, 0)[5]
    second = n + int(np.flatnonzero(bert.epoch_order(n, 0, 1) == k)[0])  # the same instance, drawn in the second epoch
    a, b = bert.get_batch(split, [5], 0, tiny()), bert.get_batch(split, [second, 7], 0, tiny())
    for key in a:
        assert torch.equal(a[key][0], b[key][0]), key
    assert (a["mlm_labels"] != -100).any()


def test_nsp_loss_counts_both_classes(data):
    split = data[0]["train"]
    model = bert.Model(tiny())
    batch = bert.get_batch(split, np.arange(16), 0, tiny())
    assert set(batch["pair_labels"].tolist()) == {0, 1}
    loss, m = bert.compute_loss(model, batch, tiny())
    loss.backward()
    assert model.nsp.weight.grad[0].abs().sum() > 0 and model.nsp.weight.grad[1].abs().sum() > 0
    flipped = dict(batch, pair_labels=1 - batch["pair_labels"])
    assert not torch.isclose(bert.compute_loss(model, flipped, tiny())[1]["nsp_loss"], m["nsp_loss"])
    assert (m["mlm_loss"] + m["nsp_loss"]).item() == pytest.approx(loss.item())


def test_without_next_sentence_b_always_continues_a_and_the_loss_is_the_masked_lm(corpus, tokenizer_file, tmp_path):
    """next_sentence=False, the ELECTRA release's BERT baseline (electra_objective false): no random B, no NSP."""
    shutil.copy(tokenizer_file, tmp_path / "tokenizer.json")
    tok = bert.load_tokenizer(tmp_path)
    splits = {ns: bert.load_data(bert.read_corpus(str(corpus)), tok, tmp_path, tiny(next_sentence=ns))["train"]
              for ns in (True, False)}
    for ns, split in splits.items():  # a token offset's document, by its sentence
        doc_of = np.repeat(np.arange(len(split["documents"])), np.diff(split["documents"], axis=1)[:, 0])
        doc, doc_b = (doc_of[np.minimum(np.searchsorted(split["sentences"][:, 1], split[s][:, 0], side="right"),
                                        len(doc_of) - 1)] for s in "ab")  # an empty B may sit at the very end
        follows = (split["b"][:, 0] >= split["a"][:, 1]) & ((doc_b == doc) | (split["b"][:, 1] == split["b"][:, 0]))
        assert follows.all() == (not ns)  # with NSP, half of the Bs come from other documents
        assert (split["pair_labels"] == 0).all() == (not ns)
    model, cfg = bert.Model(tiny(next_sentence=False)), tiny(next_sentence=False)
    batch = bert.get_batch(conftest.with_rows(bert, splits[False], cfg.seq_len), np.arange(16), 0, cfg)
    loss, metrics = bert.compute_loss(model, batch, cfg)
    loss.backward()
    assert set(metrics) == {"mlm_loss", "mlm_acc"} and loss.item() == metrics["mlm_loss"].item()
    assert model.nsp.weight.grad.abs().sum() == 0 and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with_nsp = bert.compute_loss(model, batch, tiny())[1]  # the same masked LM, the NSP loss added
    assert with_nsp["mlm_loss"].item() == metrics["mlm_loss"].item() and "nsp_loss" in with_nsp


# --- training and command line ---


def test_tiny_run_lowers_mlm_loss(corpus, tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setitem(bert.PRESETS, "tiny",
                        tiny(eval_interval=60, log_interval=20, warmup=10, eval_examples=32, dupe_factor=2))
    bert.train(train_args(tmp_path, corpus, tokenizer_file, "--steps", 60))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_mlm_loss"] < rows[0]["val_mlm_loss"] - 1.0
    assert {"mlm_acc", "nsp_acc", "nsp_loss"} <= rows[-1].keys()


@pytest.mark.floats
def test_resume_continues_exactly(corpus, tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setitem(bert.PRESETS, "tiny", tiny(eval_interval=2, log_interval=1, eval_examples=16, dupe_factor=1))
    bert.train(train_args(tmp_path / "resumed", corpus, tokenizer_file, "--steps", 2))
    bert.train(train_args(tmp_path / "resumed", corpus, tokenizer_file, "--steps", 4, "--resume"))
    bert.train(train_args(tmp_path / "straight", corpus, tokenizer_file, "--steps", 4))
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("resumed", "straight")]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [0, 1, 2, 3, 4]
    for a, b in zip(*rows):  # the warmup is 50 steps, so the first run's shorter schedule is the same
        for k in ("loss", "mlm_acc", "nsp_acc", "lr", "val_loss"):
            assert a.get(k) == pytest.approx(b.get(k), abs=1e-6), (a["step"], k)


@pytest.mark.floats
def test_prefetched_batches_train_the_same_run(corpus, tokenizer_file, tmp_path, monkeypatch):
    """--prefetch 2 builds the batches (instances in epoch order, masks) in a thread ahead of the loop: the run is
    the run of --prefetch 0, step for step."""
    monkeypatch.setitem(bert.PRESETS, "tiny", tiny(eval_interval=4, log_interval=1, eval_examples=16, dupe_factor=1))
    for ahead in (0, 2):
        bert.train(train_args(tmp_path / str(ahead), corpus, tokenizer_file, "--steps", 4, "--batch-size", 8,
                              "--grad-accum", 2, "--prefetch", ahead))
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "02"]
    assert [r["step"] for r in rows[1]] == [0, 1, 2, 3, 4]
    for a, b in zip(*rows):
        for k in ("loss", "mlm_acc", "nsp_acc", "val_loss"):
            assert a.get(k) == b.get(k), (a["step"], k)


@pytest.mark.gpu
def test_cuda_training_in_bf16(corpus, tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setitem(bert.PRESETS, "tiny", tiny(eval_interval=10, log_interval=5, warmup=5, dupe_factor=2))
    model = bert.train(train_args(tmp_path, corpus, tokenizer_file, "--steps", 10, "--device", "cuda", "--compile"))
    assert next(model.parameters()).is_cuda
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_mlm_loss"] < rows[0]["val_mlm_loss"]


def test_fill_prints_five_fillers_per_mask(corpus, tokenizer_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bert.PRESETS, "tiny", tiny(eval_examples=8, dupe_factor=1))
    bert.train(train_args(tmp_path, corpus, tokenizer_file, "--steps", 2))
    capsys.readouterr()
    assert bert.run(bert.main, ["--out", str(tmp_path), "--fill", "the [MASK] is a [MASK] ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "the [MASK] is a [MASK] ." and len(lines) == 3
    assert all(line.startswith(f"mask {i}:") and len(line.split()) == 2 + 10 for i, line in enumerate(lines[1:], 1))
    assert bert.run(bert.main, ["--out", str(tmp_path), "--fill", "no mask here"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--data", "{tmp}/nope"], "no such file"),
    (["--size", "huge"], "unknown"),
    (["--steps", "0"], "must be positive"),
    (["--from-pretrained", "{tmp}/gpt_dir"], "holds a 'openai-gpt' model"),
    (["--resume", "--out", "{tmp}/corrupt"], "cannot read checkpoint"),
    (["--out", "{tmp}/corrupt"], "exists: pass --resume"),
    (["--data", "{tmp}/empty.txt"], "no text found"),
    (["--from-pretrained", "{tmp}"], "no readable config.json"),
])
def test_bad_input_gives_one_clear_line(argv, message, corpus, tmp_path, capsys):
    (tmp_path / "gpt_dir").mkdir()
    (tmp_path / "gpt_dir" / "config.json").write_text('{"model_type": "openai-gpt"}')
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ckpt.pt").write_bytes(b"garbage")
    (tmp_path / "empty.txt").write_text("")
    argv = ["--train", "--device", "cpu", "--data", str(corpus), "--out", str(tmp_path / "run")] + \
        [a.format(tmp=tmp_path) for a in argv]
    assert bert.run(bert.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert (tmp_path / "corrupt" / "ckpt.pt").read_bytes() == b"garbage" and not (tmp_path / "run" / "ckpt.pt").exists()


def test_diff_against_gpt_stays_within_budget():
    changed = conftest.changed_lines("gpt.py", "bert.py")
    assert changed <= DIFF_BUDGET, f"diff gpt.py bert.py changes {changed} lines (budget {DIFF_BUDGET})"
