"""The training examples that load_data caches (token ranges, a packed stream, or rows, written to disk a block at a
time) are exactly the ones the papers' builders describe. Each `plain_*` below is the builder written the plain way,
over Python lists of each sentence's tokens, with the same random draws in the same order; the scripts' streamed
builders must give the same rows, segment ids and labels, row for row, on documents with empty sentences,
sentences longer than a sequence and one-sentence documents."""

import dataclasses
import importlib

import numpy as np
import pytest

import conftest

SPECIAL = {"pad": 0, "cls": 2, "sep": 3}


def synthetic_split(seed=0, documents=120, sentences=30, longest=150):
    """Documents of 1 to `sentences` sentences of 0 to `longest` tokens; token ids from 5, varied along the stream."""
    rng = np.random.default_rng(seed)
    lengths = [rng.integers(0, longest + 1, size=rng.integers(1, sentences + 1)) for _ in range(documents)]
    ends = np.cumsum(np.concatenate(lengths))
    sentences = np.stack([ends - np.concatenate(lengths), ends], 1)
    counts = np.cumsum([0] + [len(x) for x in lengths])
    return {"tokens": (5 + np.arange(ends[-1]) % 4000).astype(np.uint16), "sentences": sentences,
            "documents": np.stack([counts[:-1], counts[1:]], 1)}


def sentence_lists(split):
    tokens, sents = split["tokens"], split["sentences"]
    return [tokens[s:e].astype(np.int64).tolist() for s, e in sents]


def plain_bert(split, cfg, rng):
    sentence, docs, longest, out = sentence_lists(split), split["documents"].tolist(), cfg.seq_len - 3, []
    for _ in range(cfg.dupe_factor):
        for d, (first, last) in enumerate(docs):
            target = rng.integers(2, longest + 1) if rng.random() < cfg.short_seq_prob else longest
            chunk, length, k = [], 0, first
            while k < last:
                chunk.append(sentence[k])
                length += len(chunk[-1])
                if k == last - 1 or length >= target:
                    a_end = rng.integers(1, len(chunk)) if len(chunk) >= 2 else 1
                    a = [t for s in chunk[:a_end] for t in s]
                    if (len(chunk) == 1 or rng.random() < 0.5) and len(docs) > 1:
                        label, b = 1, []
                        o_first, o_last = docs[(d + rng.integers(1, len(docs))) % len(docs)]
                        for j in range(rng.integers(o_first, o_last), o_last):
                            b += sentence[j]
                            if len(b) >= target - len(a):
                                break
                        k -= len(chunk) - a_end
                    else:
                        label, b = 0, [t for s in chunk[a_end:] for t in s]
                    while len(a) + len(b) > longest:
                        longer = a if len(a) > len(b) else b
                        del longer[0 if rng.random() < 0.5 else -1]
                    if a and b:
                        out.append(([2, *a, 3, *b, 3], [0] * (len(a) + 2) + [1] * (len(b) + 1), label))
                    chunk, length = [], 0
                k += 1
    return out


def plain_albert(split, cfg, rng):
    sentence, docs, longest, out = sentence_lists(split), split["documents"].tolist(), cfg.seq_len - 3, []
    for _ in range(cfg.dupe_factor):
        for first, last in docs:
            target = rng.integers(2, longest + 1) if rng.random() < cfg.short_seq_prob else longest
            chunk, length, k = [], 0, first
            while k < last:
                chunk.append(sentence[k])
                length += len(chunk[-1])
                if k == last - 1 or length >= target:
                    if len(chunk) == 1:
                        cut = rng.integers(1, len(chunk[0])) if len(chunk[0]) >= 2 else 1
                        a, b = chunk[0][:cut], chunk[0][cut:]
                    else:
                        a_end = rng.integers(1, len(chunk))
                        a, b = [t for s in chunk[:a_end] for t in s], [t for s in chunk[a_end:] for t in s]
                    label = int(rng.random() < 0.5)
                    if label:
                        a, b = b, a
                    while len(a) + len(b) > longest:
                        longer = a if len(a) > len(b) else b
                        del longer[0 if rng.random() < 0.5 else -1]
                    if a and b:
                        out.append(([2, *a, 3, *b, 3], [0] * (len(a) + 2) + [1] * (len(b) + 1), label))
                    chunk, length = [], 0
                k += 1
    return out


def plain_roberta(split, cfg):
    longest, rows, row = cfg.seq_len - 2, [], []
    last_of_doc = set((split["documents"][:, 1] - 1).tolist())
    for k, sentence in enumerate(sentence_lists(split)):
        for piece in (sentence[i:i + longest] for i in range(0, len(sentence), longest)):
            if len(row) + len(piece) > longest:
                rows.append(row)
                row = []
            row += piece
        if k in last_of_doc and len(row) < longest:
            row.append(3)
    return [([2, *r, 3], None, None) for r in rows + ([row] if row else [])]


def plain_electra(split, cfg, rng):
    sentence, out, T = sentence_lists(split), [], cfg.seq_len

    def new_target():
        return rng.integers(5, T + 1) if rng.random() < cfg.short_seq_prob else T

    target = new_target()
    for first, last in split["documents"].tolist():
        chunk, length = [], 0
        for k in range(first, last):
            chunk.append(sentence[k])
            length += len(chunk[-1])
            if length < target and k < last - 1:
                continue
            half = 10**9 if rng.random() < 0.1 else (target - 3) // 2
            a, b = [], []
            for s in chunk:
                if not a or len(a) + len(s) < half or (not b and len(a) < half and rng.random() < 0.5):
                    a += s
                else:
                    b += s
            a = a[:T - 2]
            b = b[:max(0, T - len(a) - 3)]
            second = [*b, 3] if b else []
            out.append(([2, *a, 3, *second], [0] * (len(a) + 2) + [1] * len(second), None))
            chunk, length, target = [], 0, new_target()
    return out


PLAIN = {"bert": plain_bert, "albert": plain_albert, "roberta": plain_roberta, "electra": plain_electra}


@pytest.mark.parametrize("seq_len", [32, 128])
@pytest.mark.parametrize("script", list(PLAIN))
def test_streamed_examples_equal_the_plain_builders(script, seq_len, tmp_path):
    compare(script, synthetic_split(), seq_len, tmp_path)


@pytest.mark.parametrize("script", list(PLAIN))
def test_documents_read_a_block_at_a_time_change_nothing(script, tmp_path):
    """The builders read 4,096 documents at a time: a corpus of more documents crosses blocks."""
    compare(script, synthetic_split(seed=1, documents=5000, sentences=3, longest=40), 64, tmp_path)


def compare(script, split, seq_len, folder):
    module = importlib.import_module(script)
    cfg = dataclasses.replace(module.PRESETS["tiny"], seq_len=seq_len)
    if script != "roberta":  # no random choices in FULL-SENTENCES
        cfg = dataclasses.replace(cfg, short_seq_prob=0.3)
    draws = [np.random.default_rng(7)] if script != "roberta" else []
    made = conftest.made_instances(module, split, cfg, SPECIAL, folder, *draws)
    expected = PLAIN[script](split, cfg, *[np.random.default_rng(7)] * len(draws))
    assert len(made["input_ids"]) == len(expected) > 100
    for i, (ids, types, label) in enumerate(expected):
        row = np.asarray(made["input_ids"][i])
        assert row[:len(ids)].tolist() == ids and (row[len(ids):] == SPECIAL["pad"]).all(), i
        if types is not None:
            assert np.asarray(made["token_type_ids"][i])[:len(ids)].tolist() == types, i
        if label is not None:
            assert made["pair_labels"][i] == label, i
