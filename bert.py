"""BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding (Devlin, Chang, Lee,
Toutanova, 2018). What this file changes relative to gpt.py:
- Bidirectional self-attention: no causal mask; padding is masked instead (§3).
- Masked LM: 15% of tokens chosen, 80% [MASK] / 10% random / 10% unchanged; each instance keeps one mask (§3.1, A.1).
- Next sentence prediction on [CLS] A [SEP] B [SEP] pairs, B the true continuation half of the time (§3.1).
- Segment (token type) embeddings and an embedding LayerNorm; exact GELU; LayerNorm eps 1e-12 (§3.2).
- Uncased WordPiece vocabulary of 30,522 tokens (§3.2).
- Adam with lr 1e-4, 10,000 warmup steps, then linear decay; batch 256 x 128 (§A.2).
"""

import argparse
import array
import ast
import atexit
import contextlib
import dataclasses
import functools
import glob
import hashlib
import itertools
import json
import math
import os
import queue
import re
import shutil
import socket
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


# --- config ---


@dataclass
class Config:
    # model
    vocab_size: int = 30522  # uncased WordPiece, §3.2
    max_len: int = 512
    type_vocab: int = 2  # segment A / B, §3.2
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    activation: str = "gelu"  # exact erf GELU, §3.3
    eps: float = 1e-12
    dropout: float = 0.1  # all layers, §A.2
    init_std: float = 0.02  # initializer_range of the release's config
    # objective
    mask_prob: float = 0.15  # §3.1
    max_predictions: int = 20  # masked positions per sequence at length 128 (80 at 512), release
    short_seq_prob: float = 0.1  # shorter target lengths, to reduce the pretrain / fine-tune mismatch, §A.2
    dupe_factor: int = 10  # each document made into instances 10 times under different masks, release
    # training
    seq_len: int = 128  # 90% of the steps at 128, §A.2
    batch_size: int = 256  # §A.2
    grad_accum: int = 1
    steps: int = 1_000_000
    lr: float = 1e-4  # §A.2
    warmup: int = 10_000
    schedule: str = "linear"  # linear decay, §A.2
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-6  # ours is torch's AdamW; the release's AdamWeightDecay has no bias correction (README)
    clip: float = 1.0
    log_interval: int = 100
    eval_interval: int = 1000
    eval_examples: int = 1024  # the same validation examples whatever the batch size


def _sized(layers, hidden, **kw):
    """A model of L layers and H hidden: H/64 heads and a 4H feed-forward layer."""
    return Config(**{"layers": layers, "hidden": hidden, "heads": hidden // 64, "ffn": 4 * hidden, **kw})


PRESETS = {
    # ours: learns visibly in a few minutes on 2 CPU cores; no dropout for such a short run; weights from N(0, 0.08):
    # at 0.02 so narrow a model's attention stays uniform for a long time (README)
    "tiny": _sized(2, 128, vocab_size=4096, max_len=128, dropout=0.0, init_std=0.08, dupe_factor=5, batch_size=32,
                   steps=2000, lr=5e-4, warmup=50, log_interval=100, eval_interval=500, eval_examples=320),
    # the small BERTs of "Well-Read Students Learn Better" (Turc et al., 2019)
    "mini": _sized(4, 256, steps=20_000, lr=5e-4, warmup=1000),
    "small": _sized(4, 512, steps=20_000, lr=3e-4, warmup=1000),
    "medium": _sized(8, 512, steps=20_000, lr=2e-4, warmup=1000),
    "base": Config(),  # the paper: 110,106,428 parameters with the pretraining heads
    "large": _sized(24, 1024),  # 336,226,108
}


# --- model ---


class Embeddings(nn.Module):
    """Token, position and segment embeddings, summed and normalised (§3.2, Figure 2)."""

    def __init__(self, cfg):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        self.types = nn.Embedding(cfg.type_vocab, cfg.hidden)  # segment A / B, §3.2
        self.ln = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):  # (B, T) -> (B, T, H)
        T = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(torch.arange(T, device=input_ids.device))
        x = x + self.types(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        return self.drop(self.ln(x))  # summed, then LayerNorm, §3.2 Figure 2


class Model(nn.Module):
    """The bidirectional encoder and its pretraining heads: masked LM on every position, tied to the token embeddings,
    and next sentence prediction on the pooled [CLS] (§3)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.blocks = nn.ModuleList(
            common.Block(cfg.hidden, cfg.heads, cfg.ffn, cfg.activation, cfg.eps, cfg.dropout, cfg.dropout)
            for _ in range(cfg.layers))
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)  # tanh(W h[CLS] + b) feeds the sentence-pair head, §3.1
        self.mlm = nn.ModuleDict({"dense": nn.Linear(cfg.hidden, cfg.hidden),  # the MLM head's transform
                                  "ln": nn.LayerNorm(cfg.hidden, eps=cfg.eps)})
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        self.head.weight = self.embeddings.tokens.weight  # tied: one tensor, not a copy; own bias
        self.nsp = nn.Linear(cfg.hidden, 2)  # 0 = B follows A, 1 = B is random
        self.apply(self._init)
        self.tokenizer = None

    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            s = self.cfg.init_std
            nn.init.trunc_normal_(m.weight, std=s, a=-2 * s, b=2 * s)  # cut at 2 std, as the release
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # parameters() yields a shared or tied tensor once

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, T) -> (B, T, H)
        mask = common.attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None):
        """MLM logits (B, T, V), or (B, P, V) at `positions` (B, P) only; NSP logits (B, 2)."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        pair = self.nsp(torch.tanh(self.pooler(h[:, 0])))  # (B, 2): [CLS] summarises the pair
        if positions is not None:  # the vocabulary projection only where there is a loss, at a fixed shape
            h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        h = common.ACTIVATIONS[self.cfg.activation](self.mlm.dense(h))  # the MLM head: dense and GELU,
        h = self.mlm.ln(h)  # then LayerNorm (B, P, H)
        return self.head(h), pair  # (B, P, V): scored against the token embeddings

    @classmethod
    def from_pretrained(cls, path, base=None):
        """A Hugging Face-format folder (see the checkpoints section); training settings from `base`."""
        return load_pretrained(path, base)


def flops_per_token(model, cfg):
    """Training FLOPs per token, for MFU: 6 per weight a token is multiplied by (2 forward, 4 backward), plus
    12·L·H·T for attention. Embedding tables are looked up, not multiplied.
    The MLM head multiplies at the max_predictions masked slots of a sequence; the pooler and NSP head once in it."""
    P, T = cfg.max_predictions, cfg.seq_len
    weights = numel(model.blocks) + numel(model.mlm, model.head) * P / T + numel(model.pooler, model.nsp) / T
    return 6 * weights + 12 * cfg.layers * cfg.hidden * T


# --- objective ---


def load_data(corpus, tokenizer, out, cfg):
    """The training examples of each split (make_instances), made once from the token cache and cached beside it,
    and what masking needs to know about the vocabulary."""
    data = cache_tokens(corpus, tokenizer, Path(out) / "cache")
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    made = cache_key(Path(__file__).stem, cfg.seq_len, cfg.dupe_factor, cfg.short_seq_prob)  # make_instances reads
    for name, split in data.items():
        make = functools.partial(make_instances, split, cfg, np.random.default_rng(12345), special)  # release's seed
        split.update(disk_cache(split["folder"] / f"{name}.instances-{made}", make, "making the training examples"))
        split["special"], split["mask_id"] = np.array(list(special.values())), special["mask"]
        split["pad_id"], split["cls_id"], split["sep_id"] = special["pad"], special["cls"], special["sep"]
        # padding, start and separator are never masked; the unknown token may be, as in the release
        split["never_masked"] = np.array([special["pad"], special["cls"], special["sep"]])
        split["normal"] = np.setdiff1d(np.arange(tokenizer.get_vocab_size()), split["special"])  # random replacements
        if not len(split["pair_labels"]):
            raise UserError("the corpus is too small: a split made no training examples")
    return data


def make_instances(split, cfg, rng, special, new_array):
    """[CLS] A [SEP] B [SEP] pairs, as the release's create_pretraining_data, each document dupe_factor times:
    documents cut into chunks of sentences up to a target length (10% of the time a shorter one), A = the first k
    sentences of a chunk, B = the rest (label 0) or, half of the time, sentences of a random other document
    (label 1; the chunk's unused sentences go back). §3.1, A.1.
    A and B are each a run of one document's sentences, so an instance is stored as two token ranges of the cache,
    (start, end) each, and its label; `assemble` builds the rows of a batch from them. Only sentence lengths are read
    here, a block of documents at a time."""
    sents, docs = np.asarray(split["sentences"]), np.asarray(split["documents"])  # the memmaps, read as arrays
    longest = cfg.seq_len - 3  # room for [CLS], [SEP], [SEP]
    out_a, out_b, out_label = (new_array("a", np.int64, 2), new_array("b", np.int64, 2),
                               new_array("pair_labels", np.int64))
    progress = Progress("making instances", cfg.dupe_factor * len(docs), "documents", 1)
    for dupe in range(cfg.dupe_factor):  # each pass pairs and truncates differently (and gets other masks)
        for block in range(0, len(docs), 4096):
            progress.update(dupe * len(docs) + block)
            bounds = docs[block:block + 4096].tolist()
            base = bounds[0][0]
            offsets = sents[base:bounds[-1][1]].tolist()  # (start, end) of the block's sentences
            for d, (first, last) in enumerate(bounds, block):  # one target length per document and pass, as the release
                target = rng.integers(2, longest + 1) if rng.random() < cfg.short_seq_prob else longest
                start, length, k = first, 0, first  # the chunk: sentences start..k
                while k < last:
                    length += offsets[k - base][1] - offsets[k - base][0]
                    if k == last - 1 or length >= target:
                        size = k + 1 - start  # sentences in the chunk
                        a_end = start + (rng.integers(1, size) if size >= 2 else 1)  # A: sentences start..a_end-1
                        a = [offsets[start - base][0], offsets[a_end - 1 - base][1]]
                        if (size == 1 or rng.random() < 0.5) and len(docs) > 1:
                            label = 1
                            other = (d + rng.integers(1, len(docs))) % len(docs)  # never this document
                            o_first, o_last = int(docs[other, 0]), int(docs[other, 1])
                            j = rng.integers(o_first, o_last)
                            b = [int(sents[j, 0]), int(sents[j, 0])]
                            for j in range(j, o_last):
                                b[1] = int(sents[j, 1])
                                if b[1] - b[0] >= target - (a[1] - a[0]):
                                    break
                            k = a_end - 1  # the unused sentences are made into the next chunk
                        else:
                            label, b = 0, [offsets[a_end - base][0], offsets[k - base][1]]
                        excess = a[1] - a[0] + b[1] - b[0] - longest  # tokens to cut, one draw each (one call)
                        for u in rng.random(excess).tolist() if excess > 0 else ():
                            longer = a if a[1] - a[0] > b[1] - b[0] else b  # the longer side, at the front or back
                            if u < 0.5:
                                longer[0] += 1
                            else:
                                longer[1] -= 1
                        if a[1] > a[0] and b[1] > b[0]:
                            out_a.add(*a)
                            out_b.add(*b)
                            out_label.add(label)
                        start, length = k + 1, 0
                    k += 1
    progress.finish()


def assemble(split, instances, T):
    """The rows [CLS] A [SEP] B [SEP] of `instances`, padded to seq_len (B, T), and their segment ids (B, T),
    gathered from the token cache."""
    a, b = split["a"][instances], split["b"][instances]  # (B, 2) token ranges
    n_a, n_b = a[:, 1:] - a[:, :1], b[:, 1:] - b[:, :1]  # (B, 1)
    col = np.arange(T)[None, :]  # (1, T)
    in_a, in_b = (col >= 1) & (col <= n_a), (col >= n_a + 2) & (col < n_a + n_b + 2)  # (B, T)
    source = np.where(in_a, a[:, :1] + col - 1, np.where(in_b, b[:, :1] + col - n_a - 2, 0))  # (B, T) token offsets
    ids = np.where(in_a | in_b, split["tokens"][source], split["pad_id"]).astype(np.int64)
    ids[:, 0] = split["cls_id"]
    rows = np.arange(len(ids))
    ids[rows, n_a[:, 0] + 1] = ids[rows, (n_a + n_b)[:, 0] + 2] = split["sep_id"]
    return ids, ((col >= n_a + 2) & (col <= n_a + n_b + 2)).astype(np.int64)


def mask_tokens(input_ids, keys, seed, split, cfg):
    """Choose 15% of each row's tokens (never the start, separator or padding; at most max_predictions); of those
    80% become the mask token, 10% a random non-special token, 10% stay (BERT §3.1). Random numbers are keyed
    by `keys`. Returns the new ids (B, T), and the chosen positions and their labels (B, P), padded with label -100."""
    B, T = input_ids.shape
    P = cfg.max_predictions
    candidate = ~np.isin(input_ids, split["never_masked"])  # (B, T)
    n = np.minimum(P, np.maximum(1, np.rint(candidate.sum(1) * cfg.mask_prob))).astype(np.int64)  # (B,)
    # a random order of each row's candidates (the others sort last), the first P of it
    order = np.argsort(np.where(candidate, uniform(seed, keys, T, 0), 2.0), axis=1)[:, :P]  # (B, P)
    chosen = np.arange(P)[None, :] < n[:, None]  # (B, P)
    positions = np.where(chosen, order, 0)
    labels = np.where(chosen, np.take_along_axis(input_ids, positions, 1), -100)  # (B, P)
    u = uniform(seed, keys, P, 1)
    random_tokens = split["normal"][(uniform(seed, keys, P, 2) * len(split["normal"])).astype(np.int64)]
    replaced = np.where(u < 0.8, split["mask_id"], np.where(u < 0.9, labels, random_tokens))
    ids = input_ids.copy()
    rows = np.broadcast_to(np.arange(B)[:, None], (B, P))  # each slot's row
    ids[rows[chosen], positions[chosen]] = replaced[chosen]
    return ids, positions, labels


@functools.lru_cache(maxsize=3)  # training's epoch and the next, and validation's
def epoch_order(n, seed, epoch):
    """The order of the n instances in an epoch: a fresh permutation each epoch."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def get_batch(data, ids, seed, cfg):
    """Example `i` is instance epoch_order[i % n] of epoch i // n.
    Its mask is keyed by the instance, not the example: the same instance always has the same mask (STATIC, as
    the release's pre-made data)."""
    n = len(data["pair_labels"])
    instances = np.array([epoch_order(n, seed, int(i) // n)[int(i) % n] for i in ids])
    input_ids, type_ids = assemble(data, instances, cfg.seq_len)  # (B, T) each
    masked, positions, labels = mask_tokens(input_ids, instances, seed, data, cfg)
    return {"input_ids": torch.from_numpy(masked), "token_type_ids": torch.from_numpy(type_ids),
            "attention_mask": torch.from_numpy((input_ids != data["pad_id"]).astype(np.int64)),
            "mlm_positions": torch.from_numpy(positions), "mlm_labels": torch.from_numpy(labels),
            "pair_labels": torch.from_numpy(data["pair_labels"][instances])}


def compute_loss(model, batch):
    """Masked LM cross-entropy over the chosen positions + NSP cross-entropy (§3.1; A.2: "the sum of the mean
    masked LM likelihood and the mean next sentence prediction likelihood"). Returns the loss and metrics."""
    labels = batch["mlm_labels"]  # (B, P), -100 in the unused slots
    mlm_logits, pair_logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                   batch["mlm_positions"])  # (B, P, V), (B, 2)
    mlm_loss = F.cross_entropy(mlm_logits.flatten(0, 1).float(), labels.flatten())  # (B·P, V), (B·P,); -100 ignored
    pair_loss = F.cross_entropy(pair_logits.float(), batch["pair_labels"])  # both classes count: no ignore_index
    chosen = labels != -100
    metrics = {"mlm_loss": mlm_loss, "nsp_loss": pair_loss,
               "mlm_acc": ((mlm_logits.argmax(-1) == labels) & chosen).sum() / chosen.sum(),
               "nsp_acc": (pair_logits.argmax(-1) == batch["pair_labels"]).float().mean()}
    return mlm_loss + pair_loss, metrics


# --- tokenizer ---


# role -> token, in the order of their ids: [PAD] = 0, as the release's vocabulary
SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _configure(tok):
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # uncased: lowercased, accents stripped
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def train_tokenizer(docs, cfg):
    """WordPiece: words split into the longest known pieces, continuations marked ## (§3.2)."""
    from tokenizers import Tokenizer, models, trainers

    tok = _configure(Tokenizer(models.WordPiece(unk_token="[UNK]")))
    trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, special_tokens=list(SPECIALS.values()),
                                        show_progress=False)
    tok.train_from_iterator((s for doc in docs for s in doc), trainer)
    return tok


def load_tokenizer(folder):
    """The tokenizer of a checkpoint folder: `tokenizer.json`, or the released vocabulary files."""
    from tokenizers import Tokenizer, models

    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the tokenizers library raises its own exception type
            raise UserError(f"{folder / 'tokenizer.json'} is not a readable tokenizer: {e}".splitlines()[0]) from None
    if (folder / "vocab.txt").exists():
        tok = _configure(Tokenizer(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]")))
        tok.add_special_tokens(list(SPECIALS.values()))  # so that a mask token in a text is one token
        return tok
    return None


# --- fine-tuning ---


@dataclass
class Recipe:
    """How finetune.py fine-tunes this model on a task: §4 and A.3, and the release's run_classifier."""
    lr: float = 2e-5  # the best of 5e-5, 4e-5, 3e-5 and 2e-5 on each task's dev set, §4.1
    batch_size: int = 32  # §4.1
    epochs: int = 3  # §4.1
    warmup: float = 0.1  # a fraction of the steps, then linear decay: the release's warmup_proportion
    weight_decay: float = 0.01  # as in pretraining, release
    dropout: float = 0.1  # in the encoder, as in pretraining (A.3)
    head_dropout: float = 0.1  # before the classifier, release
    max_len: int = 128  # the release's max_seq_length


RECIPES = {
    "paper": Recipe(),
    # ours: the tiny preset, a thousand times smaller than the paper's model, with a step to match
    "tiny": Recipe(lr=1e-3, epochs=10),
}


def encode_inputs(tokenizer, first, second=None, max_len=128):
    """Token ids and segment ids of each example: [CLS] A [SEP] B [SEP] with segments 0 ... 0 1 ... 1 (§4.1,
    Figure 4), or [CLS] A [SEP] for one text; the longer text is cut first to fit max_len, as the release's."""
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    firsts = [e.ids for e in tokenizer.encode_batch(first, add_special_tokens=False)]
    seconds = [e.ids for e in tokenizer.encode_batch(second, add_special_tokens=False)] if second else None
    out = []
    for a, b in zip(firsts, seconds or [None] * len(firsts)):
        while len(a) + len(b or []) > max_len - (3 if b is not None else 2):
            (a if b is None or len(a) > len(b) else b).pop()
        ids = [special["cls"], *a, special["sep"], *([*b, special["sep"]] if b is not None else [])]
        out.append((ids, [0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2)))
    return out


class Classifier(nn.Module):
    """BertForSequenceClassification: the pooled [CLS] (the pretrained pooler), dropout, and one linear layer to the
    labels, its only new weights (§4.1)."""

    def __init__(self, model, num_labels, recipe):
        super().__init__()
        self.model = model
        self.drop = nn.Dropout(recipe.head_dropout)
        self.out = nn.Linear(model.cfg.hidden, num_labels)
        model._init(self.out)
        self.pad_id = model.tokenizer.token_to_id(SPECIALS["pad"])
        self.max_tokens = model.cfg.max_len

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, T) -> (B, labels)
        h = self.model.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        pooled = torch.tanh(self.model.pooler(h[:, 0]))  # (B, H)
        return self.out(self.drop(pooled))


def finetune_loss(clf, batch, recipe):
    """The task's loss alone. Returns it and the logits (B, labels)."""
    logits = clf(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return task_loss(logits, batch["labels"]), logits


# --- demo ---


def demo_arguments(p):
    p.add_argument("--fill", dest="demo", default=None, metavar="TEXT",
                   help=f"print the top-5 fillers of each {SPECIALS['mask']} in TEXT")


def demo(model, args):
    """Print the five likeliest fillers of each mask token in --fill (after training: a fixed sentence)."""
    text = args.demo if args.demo is not None else f"The {SPECIALS['mask']} statement raises an exception."
    tok, device = model.tokenizer, next(model.parameters()).device
    special = {role: tok.token_to_id(token) for role, token in SPECIALS.items()}
    ids = [special["cls"], *tok.encode(text, add_special_tokens=False).ids, special["sep"]]
    ids = torch.tensor([ids[:model.cfg.max_len]], device=device)  # (1, T)
    positions = (ids[0] == special["mask"]).nonzero().T  # (1, masks)
    if not positions.numel():
        raise UserError(f"--fill: the text has no {SPECIALS['mask']}")
    with torch.no_grad():
        logits, _ = model(ids, positions=positions)  # (1, masks, V)
    print(text)
    probs, top = logits[0].float().softmax(-1).topk(5, dim=-1)  # (masks, 5)
    for n in range(len(top)):
        shown = [tok.decode([int(i)], skip_special_tokens=False) for i in top[n]]  # specials by name, never ''
        print(f"mask {n + 1}: " + "  ".join(f"{t!r} {p:.3f}" for t, p in zip(shown, probs[n])))


# --- checkpoints: the Hugging Face layout ---

# BertForPreTraining's names -> ours, replaced in this order
HF_NAMES = [
    ("embeddings.word_embeddings", "embeddings.tokens"),
    ("embeddings.position_embeddings", "embeddings.positions"),
    ("embeddings.token_type_embeddings", "embeddings.types"),
    ("embeddings.LayerNorm", "embeddings.ln"),
    ("encoder.layer.", "blocks."),
    ("attention.self.query", "attn.q"),
    ("attention.self.key", "attn.k"),
    ("attention.self.value", "attn.v"),
    ("attention.output.dense", "attn.proj"),
    ("attention.output.LayerNorm", "ln1"),
    ("intermediate.dense", "mlp.fc"),
    ("output.dense", "mlp.proj"),
    ("output.LayerNorm", "ln2"),
    ("pooler.dense", "pooler"),
    ("cls.predictions.transform.dense", "mlm.dense"),
    ("cls.predictions.transform.LayerNorm", "mlm.ln"),
    ("cls.predictions.decoder.bias", "head.bias"),  # the same tensor as the next: a file may hold either
    ("cls.predictions.bias", "head.bias"),
    ("cls.seq_relationship", "nsp"),
]


def load_pretrained(path, base=None):
    """A `bert` folder in the Hugging Face layout (BertForPreTraining, BertForMaskedLM or BertModel; with or
    without the `bert.` prefix; legacy gamma/beta names); heads the file lacks are initialised and listed."""
    hf, sd = read_pretrained(path, "bert")
    base = base or PRESETS["base"]  # what the file does not say
    cfg = dataclasses.replace(base, vocab_size=hf["vocab_size"], max_len=hf["max_position_embeddings"],
                              type_vocab=hf.get("type_vocab_size", base.type_vocab), layers=hf["num_hidden_layers"],
                              hidden=hf["hidden_size"], heads=hf["num_attention_heads"], ffn=hf["intermediate_size"],
                              activation=hf.get("hidden_act", base.activation), eps=hf.get("layer_norm_eps", base.eps),
                              dropout=hf.get("hidden_dropout_prob", base.dropout))
    if cfg.activation not in common.ACTIVATIONS:
        raise UserError(f"{path}: activation {cfg.activation!r} is not supported")
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    skip = ("cls.predictions.decoder.weight", "embeddings.position_ids", "embeddings.token_type_ids")  # tied; buffers
    model = Model(cfg)
    load_weights(model, rename(sd, HF_NAMES, skip), path, optional=("pooler.", "mlm.", "head.bias", "nsp."))
    model.tokenizer = load_tokenizer(path)
    return model


# BertForSequenceClassification's head -> ours (the pooler is the pretrained one)
HF_HEAD = [("classifier", "out")]


def hf_config(cfg, architecture):
    """The config.json of the Hugging Face model of this shape."""
    return {"architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
            "intermediate_size": cfg.ffn, "hidden_act": cfg.activation, "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.dropout, "max_position_embeddings": cfg.max_len,
            "type_vocab_size": cfg.type_vocab, "layer_norm_eps": cfg.eps, "initializer_range": cfg.init_std,
            "pad_token_id": 0}


def export(model, folder):
    """The pretrained model as a Hugging Face BertForPreTraining folder."""
    sd = unrename({k: v for k, v in model.state_dict().items() if k != "head.weight"}, HF_NAMES)  # tied: stored once
    sd = {k if k.startswith("cls.") else "bert." + k: v for k, v in sd.items()}
    write_pretrained(folder, sd, hf_config(model.cfg, "BertForPreTraining"), model.tokenizer)


def export_classifier(clf, folder, labels, regression):
    """A fine-tuned Classifier as a Hugging Face BertForSequenceClassification folder."""
    encoder = {k.removeprefix("model."): v for k, v in clf.state_dict().items()
               if k.startswith("model.") and not k.startswith(("model.mlm.", "model.head.", "model.nsp."))}
    sd = {"bert." + k: v for k, v in unrename(encoder, HF_NAMES).items()}
    sd.update(unrename({k: v for k, v in clf.state_dict().items() if not k.startswith("model.")}, HF_HEAD))
    config = {**hf_config(clf.model.cfg, "BertForSequenceClassification"), **label_config(labels, regression)}
    write_pretrained(folder, sd, config, clf.model.tokenizer)


# ===== shared plumbing: identical in every script (tests/test_shared_code.py) =====


class UserError(Exception):
    """Bad input: reported as one line on stderr with a non-zero exit, never as a traceback."""


def get_tokenizer(out, corpus, cfg):
    """The run's tokenizer: trained once on the training documents (a sample of a large corpus), then read back from
    the run folder."""
    path = Path(out) / "tokenizer.json"
    if path.exists():
        return load_tokenizer(out)
    # every k-th document: a tokenizer learns its vocabulary long before TOKENIZER_SAMPLE bytes of text
    every = max(1, math.ceil((corpus.size or 0) / TOKENIZER_SAMPLE))
    docs = (doc for i, (split, doc) in enumerate(split_documents(corpus, "training the tokenizer, reading"))
            if split == "train" and i % every == 0)
    tokenizer = train_tokenizer(docs, cfg)  # bad input met while reading raises here, before anything is saved
    tmp = path.with_suffix(".tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)
    # read back, not the trained object: a unigram model's scores print differently before and after a save, and
    # the checkpoint's fingerprint must match the tokenizer.json a resumed run will read
    return load_tokenizer(out)


TOKENIZER_SAMPLE = 100_000_000  # bytes of text the tokenizer trains on, at most (about)


def split_sentences(text):
    """Sentences of a line of prose: split after . ! ? followed by white space."""
    return [s for s in SENTENCE_END.split(text.strip()) if s]


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def document(text):
    """A document's sentences: each line of its text split into sentences."""
    return [s for line in text.splitlines() for s in split_sentences(line)]


def default_corpus():
    """The English prose every Python ships: the documentation topics and the standard library's docstrings.

    One document per topic and per module; paragraphs are unwrapped and split into sentences.
    """
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    for f in default_corpus_files():
        try:
            tree = ast.parse(Path(f).read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        nodes = (n for n in ast.walk(tree) if isinstance(n, kinds))
        texts.append("\n\n".join(d for d in map(ast.get_docstring, nodes) if d))
    docs = []
    for text in texts:
        # prose paragraphs only: no indented code, no >>> sessions, no underlines of headings
        paragraphs = (" ".join(line.strip() for line in p.splitlines() if re.search(r"\w", line))
                      for p in re.split(r"\n\s*\n", text) if p.strip() and not p.startswith((" ", ">>>")))
        doc = [s for p in paragraphs for s in split_sentences(p)]
        if doc:
            docs.append(doc)
    return docs


def default_corpus_files():
    """The standard library's modules whose docstrings the default corpus reads (no tests, no IDLE)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*", "*.py")))
    return [f for f in files
            if not ("site-packages" in f or "test" in os.path.relpath(f, stdlib) or "idlelib" in f)]


class Corpus:
    """A corpus read lazily: iterating it streams its documents (lists of sentences) again each time, holding one
    document at a time. `key` names its content for the caches (for files: their paths, sizes and modification
    times, so a warm start never reads them) and `size` is its length in bytes (None: not known)."""

    def __init__(self, spec, key, size, documents):
        self.spec, self.key, self.size, self._documents = spec, key, size, documents

    def __iter__(self):
        return self.documents()

    def documents(self, phase=None):
        """The documents in order; with `phase`, a progress line every 10 seconds ("phase: 35% of 200 MB ...")."""
        progress = Progress(phase, self.size) if phase else None
        count = 0
        for doc, read in self._documents():  # read: the bytes read so far
            count += 1
            if progress:
                progress.update(read)
            yield doc
        if progress:
            progress.finish()
        if not count:
            raise UserError(f"--data: no text found in {self.spec}")


class Progress:
    """Progress of a long phase: at most one line every 10 seconds, with the rate and the time left."""

    def __init__(self, phase, total=None, unit="MB", scale=1e6):
        self.phase, self.total, self.unit, self.scale = phase, total, unit, scale
        self.start = self.last = time.time()

    def update(self, done):
        now = time.time()
        if now - self.last < 10:
            return
        self.last, rate = now, done / max(now - self.start, 1e-9)
        line = f"{self.phase}: {done / self.scale:,.0f} {self.unit}"
        if self.total:
            line += (f" of {self.total / self.scale:,.0f} {self.unit} ({done / self.total:.0%}), "
                     f"{rate / self.scale:,.1f} {self.unit}/s, eta {max(0, self.total - done) / max(rate, 1e-9):.0f}s")
        print(line, flush=True)

    def finish(self):
        if self.last > self.start:  # a phase that printed progress says when it ends
            print(f"{self.phase}: done in {time.time() - self.start:.0f}s", flush=True)


def read_corpus(spec):
    """The corpus of `spec`, checked and ready to stream: None for the default corpus; text files, folders or globs,
    comma-separated (a blank line between documents, a sentence per line or several); `.jsonl` with a `text` field
    per document; or `hf:NAME[:CONFIG]` through the `datasets` library (memory-mapped, read row by row)."""
    if spec is None:
        stats = [(f, os.stat(f)) for f in default_corpus_files()]  # the key: Python's version and files, none read
        key = [sys.version, [(f, s.st_size, s.st_mtime_ns) for f, s in stats]]

        docs = []

        def default_documents():
            docs[:] = docs or default_corpus()  # 1.5 MB: read once, then held
            read = itertools.accumulate(sum(len(s) + 1 for s in d) for d in docs)
            return zip(docs, read)

        return Corpus("the docs shipped with Python", key, None, default_documents)
    if spec.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise UserError("--data hf:... needs the `datasets` library: pip install datasets") from None
        name, _, config = spec[3:].partition(":")
        try:
            rows = datasets.load_dataset(name, config or None, split="train")
        except Exception as e:
            raise UserError(f"cannot load dataset {spec!r}: {e}".splitlines()[0]) from None
        size = getattr(getattr(rows, "data", None), "nbytes", None)  # an Arrow table's bytes, when it is one

        def hf_documents():
            read = 0
            for row in rows:
                read += len(row["text"])
                doc = document(row["text"])
                if doc:
                    yield doc, read

        return Corpus(spec, [spec, getattr(rows, "_fingerprint", None)], size, hf_documents)
    files = []
    for part in (part.strip() for part in spec.split(",")):
        if not part:
            continue  # "a.txt," is a.txt, never the current folder
        p = Path(part)
        matches = sorted(glob.glob(part, recursive=True)) if glob.has_magic(part) else [part] if p.exists() else []
        if not matches:
            raise UserError(f"--data: no such file, folder or glob: {part}")
        for m in map(Path, matches):
            files += sorted(f for f in m.rglob("*") if f.is_file()) if m.is_dir() else [m]
    stats = [f.stat() for f in files]

    def file_documents():
        read = 0
        for f in files:
            jsonl = f.suffix == ".jsonl"  # a document per line
            try:
                with open(f, "rb") as lines:
                    lines_of_doc = []
                    for number, raw in enumerate(lines, 1):
                        read += len(raw)
                        line = raw.decode("utf-8")
                        if jsonl:
                            if line.strip():
                                try:
                                    lines_of_doc = [str(json.loads(line)["text"])]
                                except (ValueError, KeyError, TypeError):
                                    raise UserError(f"--data: {f}, line {number}: not a JSON object with a 'text' "
                                                    "field") from None
                        elif line.strip():  # a blank line ends a document
                            lines_of_doc.append(line)
                            continue
                        doc = document("".join(lines_of_doc))
                        if doc:
                            yield doc, read
                        lines_of_doc = []
                    doc = document("".join(lines_of_doc))  # the file's last
                    if doc:
                        yield doc, read
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"--data: cannot read {f} as UTF-8 text: {e}") from None

    key = [(str(f.resolve()), s.st_size, s.st_mtime_ns) for f, s in zip(files, stats)]
    return Corpus(spec, key, sum(s.st_size for s in stats), file_documents)


VAL_EVERY, VAL_BYTES = 20, 10_000_000  # validation: every 20th document, until it holds 10 MB of text


def split_documents(corpus, phase=None):
    """(split, document) for each document of the corpus, in order: a fixed held-out split by document, every 20th
    (the last one in a corpus of fewer) until validation holds VAL_BYTES of text; later documents all train.
    (cache_tokens then drops the validation sentences that also occur in training.)"""
    pending, held, count = None, 0, 0
    for i, doc in enumerate(corpus.documents(phase)):
        if pending is not None:
            yield pending  # one document behind: the last one of a short corpus is validation
        val = i % VAL_EVERY == VAL_EVERY - 1 and held < VAL_BYTES
        held += sum(len(s) + 1 for s in doc) if val else 0
        pending, count = ("val" if val else "train", doc), i + 1
    if count < 2:
        raise UserError("the corpus is a single document; separate documents with a blank line")
    yield ("val", pending[1]) if count < VAL_EVERY else pending


class RowWriter:
    """Rows of `width` numbers (width None: single numbers) appended to a file in large blocks, so what is written
    never has to fit in memory. `add` takes one row of Python numbers, `extend` a numpy array of rows."""

    def __init__(self, path, dtype, width=None):
        self.file, self.dtype, self.width = open(path, "wb"), np.dtype(dtype), width
        self.buffer, self.count = array.array("q"), 0  # count: numbers written

    def add(self, *row):
        self.buffer.extend(row)
        if len(self.buffer) >= 1 << 20:
            self.flush()

    def extend(self, rows):
        self.flush()
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self.file.write(rows.tobytes())
        self.count += rows.size

    def flush(self):
        if self.buffer:
            self.file.write(np.frombuffer(self.buffer, np.int64).astype(self.dtype).tobytes())
            self.count += len(self.buffer)
            self.buffer = array.array("q")

    def close(self):
        """The file's dtype and shape."""
        self.flush()
        self.file.close()
        return self.dtype.str, [self.count // (self.width or 1)] + ([self.width] if self.width else [])


def disk_cache(folder, make, what):
    """Arrays made once by `make(new_array)` (new_array(name, dtype, width=None) -> RowWriter), kept as files in
    `folder` and memory-mapped by every later call; `what` says what making them does. The folder is made under
    another name and renamed when complete: an interrupted build is redone, never half-read."""
    folder = Path(folder)
    if not (folder / "arrays.json").exists():
        if int(os.environ.get("RANK", 0)) > 0:  # rank 0 prepares; another rank finding nothing reads another corpus
            raise UserError(f"{folder} is missing on this machine: rank 0 prepared other data. Share --out and the "
                            "corpus between machines (same paths and modification times), or copy both")
        print(f"{what} into {folder}", flush=True)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        writers = {}

        def new_array(name, dtype, width=None):
            writers[name] = RowWriter(tmp / name, dtype, width)
            return writers[name]

        make(new_array)
        shapes = {name: writer.close() for name, writer in writers.items()}
        (tmp / "arrays.json").write_text(json.dumps(shapes))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    shapes = json.loads((folder / "arrays.json").read_text())
    return {name: np.memmap(folder / name, np.dtype(dtype), mode="r", shape=tuple(shape)) if np.prod(shape)
            else np.zeros(shape, np.dtype(dtype)) for name, (dtype, shape) in shapes.items()}


def cache_key(*parts):
    """A short name for what `parts` (JSON) describe."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def cache_tokens(corpus, tokenizer, folder, eod_id=None):
    """Tokenize once into numpy memmaps under `folder`, keyed by corpus + tokenizer; later runs just map them.

    Per split: `tokens` (every sentence's ids, an optional end-of-document id after each document),
    `sentences` (start, end) token offsets, and `documents` (first, last + 1) sentence indices.
    A document is encoded as one text, its sentences joined by spaces, so its ids are exactly what the tokenizer
    gives that text anywhere else (a sentence encoded alone would lose the space before its first word, which a
    byte-level BPE keeps in the token); sentences are then found by the tokens' character offsets. Documents are
    encoded in batches (the tokenizer's own threads) and written as they come: memory holds one batch, the
    validation documents, and nothing else of the corpus. A validation sentence that also occurs in a training
    document is dropped (documents may contain one another: the default corpus's `class` topic is part of its
    `compound` topic), so validation never scores trained text.
    """
    folder = Path(folder) / cache_key(corpus.key, tokenizer.to_str(), eod_id)
    dtype = np.uint16 if tokenizer.get_vocab_size() < 2**16 else np.uint32  # half the disk and page cache

    def make(new_array):
        out = {split: (new_array(f"{split}.tokens", dtype), new_array(f"{split}.sentences", np.int64, 2),
                       new_array(f"{split}.documents", np.int64, 2)) for split in ("train", "val")}
        counts = {"train": [0, 0], "val": [0, 0]}  # tokens and sentences written
        # each training sentence's hash, on disk: to find the validation sentences that occur in training
        hashes = RowWriter(folder.with_name(folder.name + ".hashes"), np.int64)

        def write(split, batch):  # encoded together, by the tokenizer's own threads
            tokens, sentences, documents = out[split]
            n, s = counts[split]
            for doc, enc in zip(batch, tokenizer.encode_batch([" ".join(doc) for doc in batch],
                                                              add_special_tokens=False)):
                starts = np.cumsum([0] + [len(t) + 1 for t in doc[:-1]])  # each sentence's first character
                # a token belongs to the last sentence that starts at or before its end offset, so the space before a
                # sentence (alone, or leading a word as byte-level BPE's "Ġ") goes with that sentence
                ends = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
                owner = np.maximum.accumulate(np.clip(np.searchsorted(starts, ends, "right") - 1, 0, None))
                edges = n + np.searchsorted(owner, np.arange(len(doc) + 1))  # (sentences + 1,) token offsets
                tokens.extend(enc.ids + ([eod_id] if eod_id is not None else []))
                sentences.extend(np.stack([edges[:-1], edges[1:]], 1))
                documents.add(s, s + len(doc))
                n, s = n + len(enc.ids) + (eod_id is not None), s + len(doc)
                if split == "train":
                    hashes.extend([hash(t) for t in doc])
            counts[split] = [n, s]

        batch, chars, val = [], 0, []
        for split, doc in split_documents(corpus, "tokenizing"):
            if split == "val":
                val.append(doc)  # held until every training sentence is known: VAL_BYTES at most
                continue
            batch.append(doc)
            chars += sum(map(len, doc))
            if len(batch) == 256 or chars > 1 << 22:
                write("train", batch)
                batch, chars = [], 0
        write("train", batch)
        held = np.array(sorted({hash(s) for d in val for s in d}), dtype=np.int64)
        hashes.close()
        seen = set()  # the validation sentences that occur in training, found a block of hashes at a time
        with open(hashes.file.name, "rb") as f:
            while len(block := np.fromfile(f, np.int64, count=1 << 22)):
                seen.update(block[np.isin(block, held)].tolist())
        os.remove(hashes.file.name)
        val = [d for d in ([s for s in d if hash(s) not in seen] for d in val) if d]
        if not val:
            raise UserError("no validation text: every held-out sentence also occurs in a training document")
        for start in range(0, len(val), 256):
            write("val", val[start:start + 256])

    arrays = disk_cache(folder, make, "tokenizing the corpus")
    return {split: {k: arrays[f"{split}.{k}"] for k in ("tokens", "sentences", "documents")} | {"folder": folder}
            for split in ("train", "val")}


def uniform(seed, keys, n, stream):
    """(len(keys), n) numbers in [0, 1), a hash (splitmix64) of (seed, key, column, stream): the same key always
    draws the same numbers, however the batch around it is made up, with no per-example generator to build."""
    x = (np.array([seed], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         + np.asarray(keys, dtype=np.uint64)[:, None] * np.uint64(0xD1B54A32D192ED03)
         + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0x8CB92BA72F3D8DD7) + np.uint64(stream)
         + np.uint64(0x9E3779B97F4A7C15))
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
    return ((x ^ (x >> np.uint64(31))) >> np.uint64(11)) / 2.0 ** 53  # (B, n)


class HFConfig(dict):
    """The values of a config.json; a key the file lacks is one clear error, not a KeyError."""

    def __init__(self, path, values):
        super().__init__(values)
        self.path = path

    def __missing__(self, key):
        raise UserError(f"--from-pretrained {self.path}: config.json has no {key!r}")


def read_pretrained(path, model_type):
    """(config dict, state dict) of a Hugging Face-format folder; one clear error for anything unreadable."""
    path = Path(path)
    try:
        hf = HFConfig(path, json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as e:  # TypeError: JSON that is not an object
        raise UserError(f"--from-pretrained {path}: no readable config.json ({e.__class__.__name__})") from None
    if hf.get("model_type") != model_type:
        raise UserError(f"--from-pretrained {path}: holds a {hf.get('model_type')!r} model, "
                        f"this script loads {model_type!r}")
    try:
        if (path / "model.safetensors").exists():
            from safetensors.torch import load_file
            sd = load_file(str(path / "model.safetensors"))
        elif (path / "pytorch_model.bin").exists():
            sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise UserError(f"--from-pretrained {path}: no model.safetensors or pytorch_model.bin")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"--from-pretrained {path}: cannot read the weights ({e.__class__.__name__})") from None
    # older TensorFlow ports name LayerNorm's parameters gamma and beta
    sd = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
          for k, v in sd.items()}
    return hf, sd


def load_weights(model, sd, path, optional=()):
    """Copy `sd` into `model`; missing tensors whose names start with one of `optional` keep their fresh
    initialisation and are listed in a warning, any other mismatch is an error."""
    own = model.state_dict()
    tensors = {k for k, _ in model.named_parameters()} | {k for k, _ in model.named_buffers()}  # a tied tensor once
    missing = [k for k in tensors if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if unexpected or wrong or any(not k.startswith(optional) for k in missing):
        raise UserError(f"--from-pretrained {path}: weights do not match the config "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(sd, strict=False)
    if missing:
        parts = sorted({".".join(k.rsplit(".", 1)[0].split(".")[:2]) for k in missing})  # modules, not every layer
        print(f"warning: {path} has no {', '.join(parts)}: "
              "freshly initialised", file=sys.stderr)


def rename(sd, names, skip=()):
    """A Hugging Face state dict under our names: the parts of each name replaced by `names` [(theirs, ours), ...]
    in order, the tensors whose names start with one of `skip` left out, and separate query, key and value tensors
    (renamed to attn.q, attn.k, attn.v) joined into the one attn.qkv matrix of common.Block."""
    ours = {}
    for k, v in sd.items():
        if not k.startswith(skip):
            for theirs, new in names:
                k = k.replace(theirs, new)
            ours[k] = v
    for k in [k for k in ours if ".attn.q." in k]:
        parts = [k.replace(".attn.q.", f".attn.{n}.") for n in "qkv"]
        if all(part in ours for part in parts):
            ours[k.replace(".attn.q.", ".attn.qkv.")] = torch.cat([ours.pop(part) for part in parts])
    return ours


def unrename(sd, names):
    """Our state dict under Hugging Face names: `rename` undone, attn.qkv split into query, key and value. Where two
    of their names map to one of ours (a tied bias), the later row of `names` gives the name."""
    inverse = list(dict((new, old) for old, new in names).items())[::-1]  # ours -> theirs, the later row kept
    theirs = {}
    for k, v in sd.items():
        parts = zip("qkv", v.chunk(3)) if ".attn.qkv." in k else [(None, v)]
        for n, t in parts:
            name = k.replace(".attn.qkv.", f".attn.{n}.") if n else k
            for new, old in inverse:
                name = name.replace(new, old)
            theirs[name] = t.detach().contiguous().cpu()
    return theirs


def write_pretrained(folder, sd, config, tokenizer):
    """A Hugging Face-format folder: model.safetensors, config.json and the tokenizer."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder / "model.safetensors", 0o666 & ~umask)  # safetensors writes it for its owner only
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(str(folder / "tokenizer.json"))


def task_loss(logits, labels):
    """A fine-tuning task's loss: cross-entropy over the classes, or squared error for a regression (float labels)."""
    if labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def finetune_groups(clf, recipe):
    """The fine-tuning optimiser's parameter groups: weight decay on matrices and embeddings, not on biases or
    LayerNorm gains, one learning rate for every layer."""
    params = [p for p in clf.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.weight_decay, "lr": recipe.lr},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr": recipe.lr}]


def label_config(labels, regression):
    """The config.json entries of a Hugging Face sequence classifier: its labels, or one regression output."""
    names = ["LABEL_0"] if regression else [str(label) for label in labels]
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "regression" if regression else "single_label_classification"}


def setup_runtime(args):
    """Device (CUDA, then MPS, then CPU), autocast dtype, and DDP when launched by torchrun."""
    ddp = "RANK" in os.environ
    rank, local, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: no Apple GPU is available")
    device = torch.device(f"cuda:{local}" if name == "cuda" else name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # TF32 for the fp32 matmuls that autocast leaves (optimizer, loss): faster, and far more precise than bf16
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = args.dtype
    if dtype == "auto":
        bf16 = device.type == "mps" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
        dtype = "fp32" if device.type == "cpu" else "bf16" if bf16 else "fp16"
    if ddp:  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    return argparse.Namespace(device=device, dtype=dtype, ddp=ddp, rank=rank, world=world, master=rank == 0,
                              amp=torch.autocast(device.type, dtype=amp_dtype, enabled=dtype != "fp32"))


def configure_optimizer(model, cfg, device):
    """AdamW; weight decay on matrices and embeddings only, never on biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    # matrices and embeddings are 2-D; biases and LayerNorm gains are 1-D and are not decayed
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps, fused=device.type == "cuda")


def get_lr(step, cfg):
    """Linear warmup from lr/warmup at step 0 to lr, then cosine or linear decay to 0 at the last step."""
    if step < cfg.warmup:  # step + 1: even the first update moves the weights
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress)


@torch.no_grad()
def evaluate(model, data, seed, cfg, rt):
    """Mean validation loss and metrics over the first eval_examples examples of the split, with dropout off."""
    model.eval()
    totals = {}
    # an objective that samples (ELECTRA) draws the same samples at every evaluation; training's draws are untouched
    with torch.random.fork_rng(devices=[rt.device.index] if rt.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, cfg.eval_examples, cfg.batch_size):
            ids = np.arange(start, min(start + cfg.batch_size, cfg.eval_examples))
            batch = {k: v.to(rt.device) for k, v in get_batch(data["val"], ids, seed, cfg).items()}
            with rt.amp:
                loss, metrics = compute_loss(model, batch)
            for k, v in {"loss": loss, **metrics}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(ids) / cfg.eval_examples
    model.train()
    return {f"val_{k}": v for k, v in totals.items()}


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    tmp = Path(path).with_suffix(".tmp")  # same folder, so the rename below is atomic
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); the previous checkpoint, if any, is kept") from None


def load_checkpoint(path):
    if not Path(path).exists():
        raise UserError(f"no checkpoint at {path}: train one with --train, or pass --out or --from-pretrained")
    try:  # weights_only: a checkpoint is data, never code to run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = (str(e).strip().splitlines() or [""])[0][:100]
        raise UserError(f"cannot read checkpoint {path} ({e.__class__.__name__}: {why}); it is damaged or not a "
                        "checkpoint") from None
    if not isinstance(state, dict) or state.get("script") != Path(__file__).stem:
        name = Path(__file__).stem
        raise UserError(f"{path} is not {'an' if name[0] in 'aeiou' else 'a'} {name}.py checkpoint")
    return state


def fingerprint(tokenizer):
    """A short hash of a tokenizer: a checkpoint's token ids mean something only with the tokenizer it records."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def take_lock(out):
    """Own the run folder: `out/lock` holds this process's id and host; a second run on the folder stops, a lock
    whose process is gone is taken over. Returns the lock's path; it is released when the run or the process ends."""
    path, me = Path(out) / "lock", {"pid": os.getpid(), "host": socket.gethostname()}
    if path.exists():
        try:
            holder = json.loads(path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, me["host"]  # unreadable: a run killed while writing it
        alive = pid is not None and pid != me["pid"] and (host != me["host"] or process_alive(pid))
        if alive:
            raise UserError(f"--out {out} is in use by process {pid} on {host}; wait for it or choose another --out "
                            f"(if that run is gone, delete {path})")
        if pid is not None and pid != me["pid"]:
            print(f"warning: taking over {path} from process {pid}, which has ended", file=sys.stderr)
        path.unlink(missing_ok=True)
    try:
        with open(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:  # one winner if two start
            json.dump(me, f)
    except FileExistsError:
        raise UserError(f"--out {out} was just taken by another run; choose another --out") from None
    atexit.register(release_lock, path)  # also after an error or Ctrl-C
    return path


def release_lock(path):
    """Remove the run folder's lock if this process holds it."""
    try:
        if json.loads(Path(path).read_text()).get("pid") == os.getpid():
            Path(path).unlink()
    except (OSError, ValueError, AttributeError):
        pass


def process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def numel(*modules):
    """How many parameters these modules hold."""
    return sum(p.numel() for m in modules for p in m.parameters())


def peak_flops(device):
    """Dense bf16 peak of known GPUs, for MFU; None elsewhere."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((f for gpu, f in (("A100", 312e12), ("H100", 989e12), ("H200", 989e12)) if gpu in name), None)


def overrides(args):
    """The training settings given on the command line, validated before anything is written."""
    given = {"steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr}
    for name, value in given.items():
        if value is not None and not (value > 0 and math.isfinite(value)):  # nan fails both
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("seed", "prefetch"):
        if (getattr(args, name) or 0) < 0:
            raise UserError(f"--{name} must be 0 or more, got {getattr(args, name)}")
    return {k: v for k, v in given.items() if v is not None}


def kept_steps(spec):
    """--keep: the steps whose checkpoints stay beside the latest one, as ckpt-STEP.pt."""
    try:
        steps = {int(s) for s in (spec or "").split(",") if s.strip()}
    except ValueError:
        raise UserError(f"--keep takes step numbers separated by commas, got {spec!r}") from None
    if any(s <= 0 for s in steps):
        raise UserError(f"--keep takes positive step numbers, got {spec!r}")
    return steps


def micro_batch_ids(step, seen, cfg, rank, world):
    """The example ids of each micro-batch this process trains on, from `step` to the last step, in order. Micro-batch
    `micro` of the step that starts after `seen` examples holds seen + (micro * world + rank) * B + 0..B-1: the same
    global batch for any world size and accumulation, each process taking its own slice."""
    B, A = cfg.batch_size, cfg.grad_accum
    for _ in range(step, cfg.steps):
        for micro in range(A):
            yield seen + (micro * world + rank) * B + np.arange(B)
        seen += A * world * B


def training_batches(data, ids, seed, cfg, ahead, device):
    """The batches of `ids` in order, up to `ahead` of them built by a background thread while the loop trains (0:
    each built when the loop asks), so that the GPU does not wait while the host masks and gathers; for a CUDA
    `device`, in page-locked memory, for asynchronous copies to it."""
    pin = device.type == "cuda"

    def build(i):
        batch = get_batch(data, i, seed, cfg)
        return {k: v.pin_memory() for k, v in batch.items()} if pin else batch

    if not ahead:
        yield from map(build, ids)
        return
    made, stop = queue.Queue(maxsize=ahead), threading.Event()

    def work():
        try:
            if pin:  # a new thread's device is GPU 0: page-locking there would open a context on it in every process
                torch.cuda.set_device(device)
            for i in ids:
                if stop.is_set():
                    return
                made.put(build(i))
            made.put(None)  # the end
        except BaseException as e:  # raised again in the loop, which stops the run with it
            made.put(e)

    threading.Thread(target=work, name="prefetch", daemon=True).start()
    try:
        while (batch := made.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:  # the loop is done or stopped: empty the queue, so the thread puts at most one more batch and ends
        stop.set()
        while not made.empty():
            made.get_nowait()


def train(args):
    """Pretrain from scratch (or from --from-pretrained weights), or --resume the run in --out."""
    # 1. settings: the preset, or the resumed run's own config, with the command line's overrides
    if args.size not in PRESETS:
        raise UserError(f"--size {args.size!r} is unknown; choose one of {', '.join(PRESETS)}")
    out = Path(args.out)
    ckpt_path = out / "ckpt.pt"
    state = load_checkpoint(ckpt_path) if args.resume else None
    if state is None and ckpt_path.exists() and not args.prepare_only:  # never overwrite a run by accident
        raise UserError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    # a resumed run keeps its own config; the command line may still extend --steps or change the batch
    cfg = dataclasses.replace(Config(**state["config"]) if state else PRESETS[args.size], **overrides(args))
    keep = kept_steps(args.keep)
    # --from-pretrained: the checkpoint's architecture with the preset's training settings
    pretrained = Model.from_pretrained(args.from_pretrained, cfg) if args.from_pretrained and state is None else None
    cfg = pretrained.cfg if pretrained is not None else cfg
    rt = setup_runtime(args)  # the device is checked before the data work
    # 2. the run folder, owned by this run alone
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make the run folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out {out}: the run folder is not writable")
    if state is not None and not (out / "tokenizer.json").exists():  # a new tokenizer would change what ids mean
        raise UserError(f"{out / 'tokenizer.json'} is missing: the checkpoint needs the tokenizer it was trained with")
    lock = take_lock(out) if rt.master else None  # one run per folder
    # 3. data: corpus, tokenizer (trained once, then read back) and the paper's training examples, cached in --out
    corpus = read_corpus(args.data)  # its files are checked here, and streamed (never held) by the phases below
    if rt.ddp and not rt.master:
        torch.distributed.barrier()  # rank 0 writes the tokenizer and the caches; the others then map them
    if not rt.master and not (out / "tokenizer.json").exists():  # a tokenizer of its own would give other ids
        raise UserError(f"{out / 'tokenizer.json'} is missing on this machine: share --out between machines, or copy "
                        "a folder prepared with --prepare-only")
    if pretrained is not None and pretrained.tokenizer is not None and not (out / "tokenizer.json").exists():
        pretrained.tokenizer.save(str(out / "tokenizer.json"))
    if rt.master and not (out / "tokenizer.json").exists():
        print(f"training the tokenizer ({cfg.vocab_size:,} tokens) on {corpus.spec}", flush=True)
    tokenizer = get_tokenizer(out, corpus, cfg)
    if state is not None and state.get("tokenizer") not in (None, fingerprint(tokenizer)):  # None: an older checkpoint
        raise UserError(f"{out / 'tokenizer.json'} is not the tokenizer {ckpt_path} was trained with")
    if tokenizer.get_vocab_size() > cfg.vocab_size or cfg.seq_len > cfg.max_len:
        raise UserError(f"the model has {cfg.vocab_size} embeddings and {cfg.max_len} positions, but the tokenizer has "
                        f"{tokenizer.get_vocab_size()} tokens and a sequence is {cfg.seq_len} long")
    data = load_data(corpus, tokenizer, out, cfg)
    if rt.ddp and rt.master:
        torch.distributed.barrier()
    if args.prepare_only:
        if rt.master:
            print(f"prepared {out}: the tokenizer and {len(data['train']['tokens']):,} training tokens, cached")
            release_lock(lock)
        if rt.ddp:
            torch.distributed.destroy_process_group()
        return None

    # 4. model, optimiser and loss scaler, fresh or as the checkpoint left them
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = pretrained if pretrained is not None else Model(cfg)
    model.tokenizer = tokenizer
    step, seen = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        step, seen = state["step"], state["seen"]
    model.to(rt.device)
    optimizer = configure_optimizer(model, cfg, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == "fp16")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and rt.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    else:
        torch.manual_seed(args.seed + rt.rank)  # dropout differs across ranks
    raw = model  # the plain module: its state_dict has no `_orig_mod.` or `module.` prefixes
    if args.compile:
        if rt.master:
            print("compiling the model: the first steps take a while", flush=True)
        model = torch.compile(model)
    if rt.ddp:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # 5. logging: metrics.jsonl and one line per log interval
    metrics_path = out / "metrics.jsonl"
    if rt.master:  # on resume, forget what was logged after the checkpoint
        lines = metrics_path.read_text().splitlines() if state and metrics_path.exists() else []
        metrics_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))
        print(f"{Path(__file__).stem}.py: {raw.num_params():,} parameters, {len(data['train']['tokens']):,} training "
              f"tokens, {rt.device} {rt.dtype}, {rt.world} process(es), step {step} of {cfg.steps}")

    def log(record):
        if not rt.master:
            return
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        fmt = {"step": "{:>6}", "lr": "lr {:.2e}", "tokens_per_s": "{:,} tok/s", "mfu": "mfu {:.1%}",
               "eta_s": "eta {:.0f}s"}
        print(" | ".join(fmt.get(k, k + " {:.4f}").format(v) for k, v in record.items() if k != "data_frac"))

    # 6. the loop: a step is A micro-batches on each of W processes; on a GPU the batches are built ahead of it by
    # a thread, and the next one is sent to the device while the GPU computes
    B, A, W = cfg.batch_size, cfg.grad_accum, rt.world  # micro-batch, accumulation steps, processes
    cuda = rt.device.type == "cuda"
    ahead = args.prefetch if args.prefetch is not None else 4 if cuda else 0
    batches = training_batches(data["train"], micro_batch_ids(step, seen, cfg, rt.rank, W), args.seed, cfg, ahead,
                               rt.device)

    def next_batch():
        batch = next(batches, None)  # None after the run's last micro-batch
        return batch and {k: v.to(rt.device, non_blocking=cuda) for k, v in batch.items()}

    tokens_per_step = B * A * W * cfg.seq_len
    peak, fpt = peak_flops(rt.device), flops_per_token(raw, cfg)
    if step == 0:  # the loss before training, for comparison; validation data has its own seed
        log({"step": 0, **evaluate(raw, data, args.seed + 1, cfg, rt)})
    batch = next_batch()
    sums, t_log, step_log, t_start, step_start, data_time = {}, time.time(), step, time.time(), step, 0.0
    while step < cfg.steps:
        lr = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(A):  # forward and backward of each micro-batch; gradients add up
            with contextlib.nullcontext() if micro == A - 1 or not rt.ddp else model.no_sync():  # one all-reduce a step
                with rt.amp:
                    loss, metrics = compute_loss(model, batch)
                scaler.scale(loss / A).backward()  # the mean over micro-batches, as one batch of A * B
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / A
            t0 = time.time()
            batch = next_batch()  # the host's share of the step: waiting for the batch, sending it
            data_time += time.time() - t0
        # the update: clip, step, clear
        scaler.unscale_(optimizer)  # clip the true gradient, not the fp16-scaled one
        if cfg.clip > 0:  # 0 = no clipping
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.clip)
        scaler.step(optimizer)  # with fp16, skips the step when a gradient overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step, seen = step + 1, seen + A * W * B

        # log the means since the last line, evaluate, stop on a broken loss, save
        record = {"step": step}
        if step % cfg.log_interval == 0 or step == cfg.steps:
            values = torch.stack(list(sums.values())) / (step - step_log)  # the only host sync of the loop
            if rt.ddp:
                torch.distributed.all_reduce(values)
                values /= W
            dt, now = time.time() - t_log, time.time()
            record.update({k: float(v) for k, v in zip(sums, values)}, lr=lr,
                          tokens_per_s=round((step - step_log) * tokens_per_step / dt))
            if peak:
                record["mfu"] = record["tokens_per_s"] * fpt / (peak * W)
            eta = (now - t_start) / (step - step_start) * (cfg.steps - step)
            record.update(data_frac=round(data_time / dt, 4), eta_s=eta)
            sums, t_log, step_log, data_time = {}, now, step, 0.0
        saving = step % cfg.eval_interval == 0 or step == cfg.steps or step in keep  # evaluate, then save
        if saving:
            record.update(evaluate(raw, data, args.seed + 1, cfg, rt))
        bad = [k for k in ("loss", "val_loss") if k in record and not math.isfinite(record[k])]
        if bad:  # stop before the checkpoint below can save a broken model
            raise UserError(f"{bad[0]} became {record[bad[0]]} at step {step}; the last checkpoint was kept. "
                            "Lower --lr, or train in --dtype bf16 or fp32 instead of fp16")
        if len(record) > 1:
            log(record)
        if rt.master and saving:
            snapshot = {
                "script": Path(__file__).stem, "config": dataclasses.asdict(cfg), "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step, "seen": seen,
                "rng": torch.get_rng_state(), "tokenizer": fingerprint(tokenizer),
                **({"cuda_rng": torch.cuda.get_rng_state()} if rt.device.type == "cuda" else {})}
            if step in keep:  # a copy that later saves leave alone; written first, so a resume never skips it
                save_checkpoint(out / f"ckpt-{step}.pt", snapshot)
            save_checkpoint(ckpt_path, snapshot)
    if rt.master:
        print(f"trained to step {step} in {time.time() - t_start:.0f}s; checkpoint: {ckpt_path}")
        release_lock(lock)
    if rt.ddp:
        torch.distributed.destroy_process_group()
    return raw.eval()


def load_model(args):
    """The model of --from-pretrained, else of the checkpoint in --out, with its tokenizer."""
    if args.from_pretrained:
        model = Model.from_pretrained(args.from_pretrained)
        if model.tokenizer is None:
            raise UserError(f"--from-pretrained {args.from_pretrained}: no tokenizer files")
        return model.eval()
    return model_from_checkpoint(Path(args.out) / "ckpt.pt").eval()


def model_from_checkpoint(path):
    """The model of a training checkpoint, with the tokenizer beside it (the one its fingerprint names)."""
    state = load_checkpoint(path)
    model = Model(Config(**state["config"]))
    model.load_state_dict(state["model"])
    model.tokenizer = load_tokenizer(Path(path).parent)
    if model.tokenizer is None or state.get("tokenizer") not in (None, fingerprint(model.tokenizer)):
        raise UserError(f"{Path(path).parent / 'tokenizer.json'} is missing or is not the tokenizer of the checkpoint")
    return model


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", action="store_true", help="pretrain, then run the demo")
    p.add_argument("--size", default=None, help=f"preset: {', '.join(PRESETS)} (default: small on CUDA, else tiny)")
    p.add_argument("--data", default=None, help="text files, folders or globs, comma-separated; .jsonl with a 'text' "
                                                "field; or hf:NAME[:CONFIG] (default: the docs shipped with Python)")
    p.add_argument("--out", default=f"runs/{Path(__file__).stem}",
                   help="run folder: tokenizer, token cache, checkpoint, metrics")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per micro-batch per process (default: the preset's)")
    p.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per optimiser step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: CUDA, then MPS, then CPU")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto: bf16 where the GPU has it, else fp16 with loss scaling; fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--prefetch", type=int, default=None,
                   help="training batches built ahead of the loop by a background thread (default: 4 on CUDA, else 0)")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and sampling")
    p.add_argument("--from-pretrained", default=None, metavar="DIR", help="a Hugging Face-format checkpoint folder")
    p.add_argument("--keep", default=None, metavar="STEPS",
                   help="also keep the checkpoints of these steps (comma-separated) as ckpt-STEP.pt in --out")
    p.add_argument("--prepare-only", action="store_true",
                   help="train the tokenizer and cache the training data in --out, then stop (once, before a run "
                        "of many processes)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="write the trained (or loaded) model to DIR in the Hugging Face layout")
    return p


def run(main, argv):
    """Run `main`; bad input ends with one line on stderr and exit status 2, never a traceback."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written whole, so the last one is intact
        ckpt = Path(build_parser().parse_known_args(argv)[0].out) / "ckpt.pt"
        print(f"interrupted: the last checkpoint is {ckpt}; continue with --resume --out {ckpt.parent}" if ckpt.exists()
              else "interrupted before the first checkpoint was written", file=sys.stderr)
        return 130


def main(argv=None):
    p = build_parser()
    demo_arguments(p)  # the paper's demo: --sample, --fill or --detect, stored as args.demo
    args = p.parse_args(argv)
    if not args.train and args.demo is None and args.export is None and not args.prepare_only:
        p.print_help()
        return 0
    if args.size is None:
        args.size = "small" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "tiny"
    model = train(args) if args.train or args.prepare_only else load_model(args)
    if int(os.environ.get("RANK", 0)) == 0 and model is not None:
        if args.export is not None:
            export(model, args.export)
            print(f"the model, in the Hugging Face layout: {args.export}")
        if args.train or args.demo is not None:
            demo(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, None))
