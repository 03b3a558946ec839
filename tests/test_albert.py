"""albert.py: parity with AlbertForPreTraining, one shared layer, the paper's sizes, SOP, n-gram masking, LAMB."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import conftest
import albert

DIFF_BUDGET = 451  # `diff bert.py albert.py`: 393, +1 the pinned paper version, +57 hash streams, 100 columns
# (+19 with the deterministic tokenizer training: sorted "##" pieces for WordPiece, sorted and rounded unigram pieces)
# (+11 with bert.py's next_sentence switch, the masked LM alone: the ELECTRA release's BERT baseline)


def tiny(**changes):
    return dataclasses.replace(albert.PRESETS["tiny"], **changes)


@pytest.fixture(scope="module")
def tokenizer_file(corpus, tmp_path_factory):
    return conftest.tokenizer_file(albert, corpus, tmp_path_factory.mktemp("albert-tokenizer"))


@pytest.fixture(scope="module")
def data(corpus, tokenizer_file, tmp_path_factory):
    return conftest.split_data(albert, corpus, tokenizer_file, tmp_path_factory.mktemp("albert-data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from transformers import AlbertConfig, AlbertForPreTraining

    torch.manual_seed(0)
    hf = AlbertForPreTraining(AlbertConfig(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                                           num_attention_heads=4, intermediate_size=64, max_position_embeddings=24,
                                           attn_implementation="eager")).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms, so that mapping mistakes show
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("albert-ref")
    hf.save_pretrained(path)
    return hf, path


@pytest.mark.floats
def test_parity_with_albert_for_pretraining(reference):
    hf, path = reference
    ours = albert.Model.from_pretrained(path).eval()
    torch.manual_seed(1)
    ids = torch.randint(5, 99, (2, 12))
    types = torch.tensor([[0] * 5 + [1] * 7, [0] * 4 + [1] * 4 + [0] * 4])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:], ids[1, 8:] = 0, 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        hidden = ours.encode(ids, mask, types)
        mlm, sop = ours(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(mlm[real], ref.prediction_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(sop, ref.sop_logits, atol=1e-5, rtol=0)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


def test_a_v2_file_without_sop_head_gets_one_and_a_warning(reference, tmp_path, capsys):
    hf, path = reference
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save({k: v for k, v in hf.state_dict().items() if not k.startswith("sop_classifier")},
               tmp_path / "pytorch_model.bin")
    albert.Model.from_pretrained(tmp_path)
    assert "has no sop: freshly initialised" in capsys.readouterr().err


def test_every_layer_is_the_same_object():
    model = albert.Model(tiny())
    assert isinstance(model.block, torch.nn.Module) and not hasattr(model, "blocks")
    calls = []
    model.block.register_forward_hook(lambda *_: calls.append(1))
    model.encode(torch.randint(5, 4096, (1, 8)))
    assert len(calls) == tiny().layers  # one module, applied L times


def test_flops_per_token_count_the_shared_layer_at_every_depth():
    """MFU's FLOP count: more layers add no parameter but each its work, measured here by torch's counter of the
    matrix products (forward; the count's 6 per parameter is 2 forward + 4 backward). The counter leaves out the
    CPU's attention kernel, and so does this comparison (the count's 12·H·T per layer)."""
    from torch.utils.flop_counter import FlopCounterMode

    T, measured, counted = 64, [], []
    for layers in (1, 3):
        cfg = tiny(layers=layers, seq_len=T)
        model = albert.Model(cfg)
        with FlopCounterMode(display=False) as counter:
            model.encode(torch.randint(5, 4096, (1, T)))
        measured.append(counter.get_total_flops() / T)
        counted.append(albert.flops_per_token(model, cfg))
    attention = 12 * 2 * tiny().hidden * T  # two more layers
    assert counted[1] - counted[0] - attention == pytest.approx(3 * (measured[1] - measured[0]), rel=0.02)  # LN, biases
    assert albert.Model(tiny(layers=3)).num_params() == albert.Model(tiny(layers=1)).num_params()


@pytest.mark.parametrize("size, count", [("base", 11_813_810), ("large", 17_847_474), ("xlarge", 59_021_490),
                                         ("xxlarge", 223_158_450)])
def test_paper_sizes_have_the_reference_parameter_counts(size, count):
    with torch.device("meta"):
        model = albert.Model(albert.PRESETS[size])
    assert model.num_params() == count
    assert model.head.weight is model.embeddings.tokens.weight


def test_sop_negatives_are_the_same_segments_swapped(data):
    split = data[0]["train"]
    stream = split["tokens"].astype(np.int32).tobytes()
    sep, checked = split["special"][3], [0, 0]
    for ids, label in zip(split["input_ids"][:300], split["pair_labels"][:300]):
        first, second = np.flatnonzero(ids == sep)
        a, b = ids[1:first], ids[first + 1:second]
        earlier, later = (b, a) if label else (a, b)  # label 1: B is the segment that came first
        found = stream.find(np.concatenate([earlier, later]).astype(np.int32).tobytes())
        while found > 0 and found % 4:
            found = stream.find(np.concatenate([earlier, later]).astype(np.int32).tobytes(), found + 1)
        untruncated = (ids != 0).sum() < tiny().seq_len - 1
        if untruncated:  # then the two segments are contiguous in one document, in the order the label says
            assert found >= 0
            checked[label] += 1
    assert min(checked) > 30
    assert 0.4 < split["pair_labels"].mean() < 0.6


def test_ngram_lengths_and_whole_words(data):
    split = data[0]["train"]
    ids = split["input_ids"][np.arange(3000) % len(split["pair_labels"])].astype(np.int64)
    new, positions, labels = albert.mask_tokens(ids, np.arange(3000), 0, split, tiny())
    lengths = []
    for r in range(len(ids)):
        chosen = positions[r][labels[r] != -100]
        assert not np.isin(ids[r, chosen], split["never_masked"]).any()
        assert (labels[r][labels[r] != -100] == ids[r, chosen]).all()
        # a word begins with "▁" or right after a special token, and ends where the next one begins
        starts = split["word_start"][ids[r]] | np.isin(np.roll(ids[r], 1), split["special"])
        ends = np.append(starts[1:] | np.isin(ids[r, 1:], split["special"]), True)
        for run in np.split(chosen, np.flatnonzero(np.diff(chosen) > 1) + 1) if len(chosen) else []:
            assert starts[run[0]] and ends[run[-1]]  # whole words only
            lengths.append(int(starts[run].sum()))  # words in the span (adjacent spans can merge; rare)
    freq = np.bincount(lengths, minlength=4)[1:4] / len(lengths)
    assert freq[0] > freq[1] > freq[2] > 0.05  # short spans most often: p(n) ∝ 1/n
    assert freq == pytest.approx([6 / 11, 3 / 11, 2 / 11], abs=0.06)
    chosen = labels != -100
    assert chosen.sum() / (~np.isin(ids, split["never_masked"])).sum() == pytest.approx(0.15, abs=0.02)
    out = new[np.broadcast_to(np.arange(3000)[:, None], positions.shape)[chosen], positions[chosen]]
    assert (out == split["mask_id"]).mean() == pytest.approx(0.8, abs=0.02)


def sequential_ngram_mask(row, key, seed, split, cfg):
    """The rule of §4.1 as the release runs it, one row at a time: walk the row's words in a random order, take the
    n-gram starting at each while it fits the budget and overlaps nothing taken. Returns the chosen positions."""
    candidate = ~np.isin(row, split["never_masked"])
    words = []  # token positions of each word; a word starts with "▁" or after a token that is never masked
    for t in np.flatnonzero(candidate):
        if split["word_start"][row[t]] or t == 0 or not candidate[t - 1] or not words:
            words.append([])
        words[-1].append(int(t))
    budget = min(cfg.max_predictions, max(1, int(np.rint(candidate.sum() * cfg.mask_prob))))
    p = 1 / np.arange(1, cfg.max_ngram + 1)
    n_of = 1 + np.searchsorted(np.cumsum(p / p.sum()), albert.uniform(seed, [key], len(words), 3)[0])
    taken, count = set(), 0
    for first in np.argsort(albert.uniform(seed, [key], len(words), 4)[0]):
        span = range(first, min(first + n_of[first], len(words)))
        size = sum(len(words[w]) for w in span)
        if count + size <= budget and not taken.intersection(span):
            taken.update(span)
            count += size
    return sorted(t for w in taken for t in words[w])


@pytest.mark.parametrize("seq_len", [32, 512])
def test_ngram_masks_follow_the_sequential_rule(data, seq_len):
    """The vectorised masking (one pass per word rank, stopping once every row is full) chooses, row by row, what
    the plain sequential rule chooses, in batches whose rows fill their budgets at very different ranks."""
    split, cfg = data[0]["train"], tiny(seq_len=seq_len, max_predictions=max(20, seq_len // 8))
    rng = np.random.default_rng(1)
    ids = split["input_ids"][rng.integers(0, len(split["pair_labels"]), 64)].astype(np.int64)
    if seq_len > ids.shape[1]:  # long rows: several instances end to end, each with its own [CLS] and [SEP]
        ids = np.concatenate([ids] * (seq_len // ids.shape[1]), 1)
    ids[::3, rng.integers(8, ids.shape[1] // 2):] = 0  # short rows too: small budgets, few words
    ids = ids[:, :seq_len]
    keys = rng.integers(0, 10**6, len(ids))
    _, positions, labels = albert.mask_tokens(ids, keys, 7, split, cfg)
    for r in range(len(ids)):
        expected = sequential_ngram_mask(ids[r], keys[r], 7, split, cfg)
        assert sorted(positions[r][labels[r] != -100]) == expected, f"row {r}"


def test_ngram_masks_are_keyed_and_the_release_settings():
    """Vectorised over the batch, a row's mask still depends only on its key: the same instance gets the same mask
    in any batch (static masking). dupe_factor 40 and 20 predictions at length 512 are the release's."""
    ids = np.random.default_rng(0).integers(5, 4096, (8, 128))
    ids[:, 0], ids[:, 60], ids[:, 100:] = 2, 3, 0
    split = {"never_masked": np.array([0, 2, 3]), "special": np.arange(5), "mask_id": 4, "normal": np.arange(5, 4096),
             "word_start": np.arange(4096) % 3 == 0}
    whole = albert.mask_tokens(ids, np.arange(8), 0, split, tiny())
    part = albert.mask_tokens(ids[[5, 2]], np.array([5, 2]), 0, split, tiny())
    for a, b in zip(whole, part):
        assert np.array_equal(a[[5, 2]], b)
    assert albert.PRESETS["base"].dupe_factor == 40 and albert.PRESETS["base"].max_predictions == 20


@pytest.mark.floats
def test_one_lamb_step_by_hand():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))
    opt = albert.Lamb([{"params": [w], "weight_decay": 0.01, "adapt": True},
                       {"params": [b], "weight_decay": 0.0, "adapt": False}], lr=0.1, betas=(0.9, 0.99), eps=1e-6)
    gw, gb = torch.randn(3, 4), torch.randn(4)
    w0, b0 = w.detach().clone(), b.detach().clone()
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    m, v = 0.1 * gw, 0.01 * gw ** 2  # one step from zero moments, no bias correction
    update = m / (v.sqrt() + 1e-6) + 0.01 * w0
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (w0.norm() / update.norm()) * update)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * (0.1 * gb) / ((0.01 * gb ** 2).sqrt() + 1e-6))


def test_tiny_run_lowers_the_loss(corpus, tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setitem(albert.PRESETS, "tiny", tiny(eval_interval=60, log_interval=20, warmup=10, eval_examples=32,
                                                     dupe_factor=2))
    shutil.copy(tokenizer_file, tmp_path / "tokenizer.json")
    albert.train(albert.build_parser().parse_args(
        ["--train", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--data", str(corpus),
         "--steps", "60"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_mlm_loss"] < rows[0]["val_mlm_loss"] - 0.5 and "sop_acc" in rows[-1]
    state = albert.load_checkpoint(tmp_path / "ckpt.pt")
    assert set(state["optimizer"]["state"][0]) == {"m", "v"}  # LAMB's state, checkpointed
    assert albert.run(albert.main, ["--out", str(tmp_path), "--fill", "the [MASK] is here ."]) == 0


def test_a_freshly_trained_tokenizer_is_the_one_a_resumed_run_restores(corpus, tmp_path):
    """A unigram model's scores print differently before and after a save: the run must use (and store in its
    checkpoint) the tokenizer as read back, or a resumed run would key its caches differently and build them again."""
    trained = albert.get_tokenizer(tmp_path, albert.read_corpus(str(corpus)), albert.PRESETS["tiny"])
    assert trained.to_str() == albert.load_tokenizer(tmp_path).to_str()
    assert trained.to_str() == albert.Tokenizer.from_str(trained.to_str()).to_str()


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert albert.run(albert.main, ["--fill", "a [MASK]", "--from-pretrained", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: --from-pretrained {tmp_path}: holds a 'bert' model, "
                                       "this script loads 'albert'\n")


def test_diff_against_bert_stays_within_budget():
    changed = conftest.changed_lines("bert.py", "albert.py")
    assert changed <= DIFF_BUDGET, f"diff bert.py albert.py changes {changed} lines (budget {DIFF_BUDGET})"
