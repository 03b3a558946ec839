"""ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators (Clark, Luong, Le, Manning, 2020).
What this file changes relative to bert.py:
- Replaced token detection: a small generator (an MLM) fills the masked positions with SAMPLED tokens and the
  discriminator, the model that is kept, tells for EVERY token whether it was replaced (§2).
- Generator and discriminator share one embedding module (§3.1); the generator is a fraction of the size (§3.2).
- Loss = generator MLM + 50 x discriminator; no gradient flows through the samples (§2).
- Masking: 15% of tokens (25% for large), 85% [MASK] / 15% unchanged, no random tokens; a new mask every time
  an example is fed (release).
- No next sentence prediction and no pooler: one or two segments of one document per example (release).
- Embedding size E, with a projection to each encoder's width where they differ (Table 6).
- Adam with lr 5e-4 (small) / 2e-4 (base), 10,000 warmup steps, then linear decay (Table 6).
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
    embed: int = 768  # E, shared by both encoders (Table 6)
    layers: int = 12
    hidden: int = 768  # the discriminator's
    heads: int = 12
    ffn: int = 3072
    gen_size: float = 1 / 3  # generator hidden / discriminator hidden (§3.2, Table 6); heads hidden/64, FFN 4x
    activation: str = "gelu"  # exact erf GELU, §3.3
    eps: float = 1e-12
    dropout: float = 0.1  # all layers, §A.2
    init_std: float = 0.02  # initializer_range of the release's config
    # objective
    mask_prob: float = 0.15  # §2 (25% for large, Table 6)
    max_predictions: int = 79  # masked positions per sequence: int((mask_prob + 0.005) * seq_len), release
    short_seq_prob: float = 0.05  # a random target length instead of the full one, release
    disc_weight: float = 50.0  # λ, §2
    # training
    seq_len: int = 512  # Table 6
    batch_size: int = 256  # Table 6
    grad_accum: int = 1
    steps: int = 766_000  # Table 6
    lr: float = 2e-4  # Table 6
    warmup: int = 10_000
    schedule: str = "linear"  # the release decays from step 0, peak * (1 - t/N) * min(1, t/w): within w/N of ours
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-6  # ours is torch's AdamW; the release's AdamWeightDecay has no bias correction (README)
    clip: float = 1.0
    log_interval: int = 100
    eval_interval: int = 1000
    eval_examples: int = 1024  # the same validation examples whatever the batch size

    @property
    def gen_hidden(self):
        return round(self.hidden * self.gen_size)


def _sized(layers, hidden, **kw):
    """A model of L layers and H hidden: H/64 heads and a 4H feed-forward layer."""
    return Config(**{"layers": layers, "hidden": hidden, "heads": hidden // 64, "ffn": 4 * hidden, **kw})


PRESETS = {
    # ours: learns visibly in a few minutes on 2 CPU cores; no dropout for such a short run; weights from N(0, 0.08):
    # at 0.02 so narrow a model's attention stays uniform long; sequences of 32: at 128 it ignores word order (README)
    "tiny": _sized(2, 128, embed=128, gen_size=1 / 4, vocab_size=4096, max_len=128, dropout=0.0, init_std=0.08,
                   max_predictions=5, seq_len=32, batch_size=64, steps=3000, lr=1e-3, warmup=200, log_interval=100,
                   eval_interval=500, eval_examples=1024),
    # the paper's ELECTRA-Small: 13,549,057 parameters in the discriminator (Table 6; its generator 1/4 the width)
    "small": _sized(12, 256, embed=128, gen_size=1 / 4, max_predictions=19, seq_len=128, batch_size=128,
                    steps=1_000_000, lr=5e-4),
    "base": Config(),  # 109,483,009 in the discriminator, 33,740,602 in the generator
    # ELECTRA-400K; the released ELECTRA-Large trained for 1.75M steps
    "large": _sized(24, 1024, embed=1024, gen_size=1 / 4, mask_prob=0.25, max_predictions=130, batch_size=2048,
                    steps=400_000),
}


# --- model ---


class Embeddings(nn.Module):
    """Token, position and segment embeddings of size E, summed and normalised; ONE module for both encoders."""

    def __init__(self, cfg):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.embed)
        self.types = nn.Embedding(cfg.type_vocab, cfg.embed)  # segment A / B, §3.2
        self.ln = nn.LayerNorm(cfg.embed, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):  # (B, T) -> (B, T, E)
        T = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(torch.arange(T, device=input_ids.device))
        x = x + self.types(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        return self.drop(self.ln(x))  # summed, then LayerNorm, §3.2 Figure 2


class Encoder(nn.Module):
    """Blocks of width `hidden` on the shared embeddings, entered through a Linear(E, hidden) where E differs."""

    def __init__(self, cfg, hidden, heads, ffn):
        super().__init__()
        self.project = nn.Linear(cfg.embed, hidden) if hidden != cfg.embed else nn.Identity()
        self.blocks = nn.ModuleList(
            common.Block(hidden, heads, ffn, cfg.activation, cfg.eps, cfg.dropout, cfg.dropout)
            for _ in range(cfg.layers))

    def forward(self, x, mask):  # (B, T, E) -> (B, T, hidden)
        x = self.project(x)
        for block in self.blocks:
            x = block(x, mask)
        return x


class Model(nn.Module):
    """A small generator (a masked LM) and the discriminator, two encoders on shared embeddings: the generator fills
    the masked positions with samples, the discriminator tells for every token whether it was replaced (§2)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)  # ONE module that both encoders read, not a copy (§3.1)
        g = cfg.gen_hidden
        self.generator = Encoder(cfg, g, max(1, g // 64), 4 * g)  # heads and FFN as the release sizes them
        self.discriminator = Encoder(cfg, cfg.hidden, cfg.heads, cfg.ffn)
        self.mlm = nn.ModuleDict({"dense": nn.Linear(g, cfg.embed),  # the MLM head's transform
                                  "ln": nn.LayerNorm(cfg.embed, eps=cfg.eps)})
        self.head = nn.Linear(cfg.embed, cfg.vocab_size)
        self.head.weight = self.embeddings.tokens.weight  # tied: one tensor, not a copy; own bias
        self.rtd = nn.ModuleDict({"dense": nn.Linear(cfg.hidden, cfg.hidden), "out": nn.Linear(cfg.hidden, 1)})
        self.apply(self._init)
        for m in (self.rtd.out, self.generator.project, self.discriminator.project):
            if isinstance(m, nn.Linear):  # layers the release builds with tf.layers.dense's default, Glorot uniform
                nn.init.xavier_uniform_(m.weight)
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

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, T) -> (B, T, H), the discriminator's
        return self.discriminator(self.embeddings(input_ids, token_type_ids), common.attention_mask(attention_mask))

    def detect(self, input_ids, attention_mask=None, token_type_ids=None):
        """The discriminator's logit (B, T) that each token was replaced."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        h = common.ACTIVATIONS[self.cfg.activation](self.rtd.dense(h))  # (B, T, H)
        return self.rtd.out(h).squeeze(-1)  # (B, T)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None, labels=None):
        """Replaced token detection in one call, so that DDP and torch.compile see the whole step: the generator's
        MLM logits (B, P, V) at the masked `positions` (B, P); tokens sampled from them in place of the originals
        `labels` (B, P); the discriminator's logits (B, T) on the result, and its labels (B, T)."""
        h = self.generator(self.embeddings(input_ids, token_type_ids), common.attention_mask(attention_mask))
        h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, Hg): the masked positions only
        h = common.ACTIVATIONS[self.cfg.activation](self.mlm.dense(h))  # the MLM head: dense and GELU,
        h = self.mlm.ln(h)  # then LayerNorm (B, P, E)
        logits = self.head(h)  # (B, P, V): scored against the token embeddings
        fake, replaced = sample_replacements(input_ids, positions, labels, logits)  # (B, T), (B, T)
        return logits, self.detect(fake, attention_mask, token_type_ids), replaced

    @classmethod
    def from_pretrained(cls, path, base=None, generator=None):
        """A Hugging Face-format folder and, if given, its generator's (see the checkpoints section)."""
        return load_pretrained(path, base, generator)


def flops_per_token(model, cfg):
    """Training FLOPs per token, for MFU: 6 per weight a token is multiplied by (2 forward, 4 backward), plus
    12·L·H·T for attention. Embedding tables are looked up, not multiplied.
    Both encoders multiply at every position; the generator's MLM head at the max_predictions masked slots."""
    P, T = cfg.max_predictions, cfg.seq_len
    weights = numel(model.generator, model.discriminator, model.rtd) + numel(model.mlm, model.head) * P / T
    return 6 * weights + 12 * cfg.layers * (cfg.hidden + cfg.gen_hidden) * T


# --- objective ---


def load_data(corpus, tokenizer, out, cfg):
    """The training examples of each split (make_instances), made once from the token cache and cached beside it,
    and what masking needs to know about the vocabulary."""
    data = cache_tokens(corpus, tokenizer, Path(out) / "cache")
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    made = cache_key(Path(__file__).stem, cfg.seq_len, cfg.short_seq_prob)  # what make_instances reads
    for name, split in data.items():
        make = functools.partial(make_instances, split, cfg, np.random.default_rng(12345), special)  # release's seed
        split.update(disk_cache(split["folder"] / f"{name}.instances-{made}", make, "making the training examples"))
        split["special"], split["mask_id"] = np.array(list(special.values())), special["mask"]
        split["pad_id"] = special["pad"]
        # padding, start and separator are never masked; the unknown token may be, as in the release
        split["never_masked"] = np.array([special["pad"], special["cls"], special["sep"]])
        split["normal"] = np.setdiff1d(np.arange(tokenizer.get_vocab_size()), split["special"])  # random replacements
        if not len(split["input_ids"]):
            raise UserError("the corpus is too small: a split made no training examples")
    return data


def make_instances(split, cfg, rng, special, new_array):
    """[CLS] A [SEP] B [SEP], as the release's build_pretraining_dataset: a document's sentences gathered up to a
    target length (5% of the time a random shorter one), then cut in two at a sentence near the middle, or 10% of
    the time kept as one segment [CLS] A [SEP]. An example never crosses a document; there is no next sentence
    prediction (release).
    A sentence may join A after an earlier one went to B (the release's rule below), so the rows themselves are
    stored, `input_ids` and `token_type_ids` (N, T), written as they are made."""
    tokens, sents, docs = split["tokens"], split["sentences"], split["documents"]
    T = cfg.seq_len
    out_ids, out_types = new_array("input_ids", tokens.dtype, T), new_array("token_type_ids", np.int8, T)

    def new_target():
        return rng.integers(5, T + 1) if rng.random() < cfg.short_seq_prob else T

    target = new_target()
    progress = Progress("making instances", len(docs), "documents", 1)
    for block in range(0, len(docs), 4096):
        progress.update(block)
        bounds = docs[block:block + 4096].tolist()
        base = bounds[0][0]
        offsets = sents[base:bounds[-1][1]].tolist()  # (start, end) of the block's sentences
        for first, last in bounds:
            chunk, length = first, 0  # the chunk: sentences chunk..k
            for k in range(first, last):
                length += offsets[k - base][1] - offsets[k - base][0]
                if length < target and k < last - 1:
                    continue
                half = 10**9 if rng.random() < 0.1 else (target - 3) // 2  # one segment, as classification inputs
                a, b, n_a, n_b = [], [], 0, 0  # each segment's sentences (token ranges) and length
                for start, end in offsets[chunk - base:k + 1 - base]:
                    # A while it is short of half (a coin decides at the crossing), then B, as the release
                    if not n_a or n_a + end - start < half or (not n_b and n_a < half and rng.random() < 0.5):
                        a.append(tokens[start:end])
                        n_a += end - start
                    else:
                        b.append(tokens[start:end])
                        n_b += end - start
                a = np.concatenate(a)[:T - 2]
                b = np.concatenate(b or [a[:0]])[:max(0, T - len(a) - 3)]
                ids, types = np.full(T, special["pad"], tokens.dtype), np.zeros(T, np.int8)  # the row, padded
                ids[0], ids[1:len(a) + 1], ids[len(a) + 1] = special["cls"], a, special["sep"]
                if len(b):  # segment B and its separator, when there is a B
                    ids[len(a) + 2:len(a) + len(b) + 2], ids[len(a) + len(b) + 2] = b, special["sep"]
                    types[len(a) + 2:len(a) + len(b) + 3] = 1
                out_ids.extend(ids)
                out_types.extend(types)
                chunk, length, target = k + 1, 0, new_target()
    progress.finish()


def mask_tokens(input_ids, keys, seed, split, cfg):
    """Choose mask_prob of each row's tokens (never the start, separator or padding; at most max_predictions); of those
    85% become the mask token and 15% stay, with no random tokens: the generator supplies those (release). Random
    numbers are keyed by `keys`. Returns the new ids (B, T), and the chosen positions and their labels (B, P),
    padded with label -100. The release draws positions with replacement, so a few repeat; ours are distinct."""
    B, T = input_ids.shape
    P = cfg.max_predictions
    candidate = ~np.isin(input_ids, split["never_masked"])  # (B, T)
    real = (input_ids != split["pad_id"]).sum(1)  # [CLS] and [SEP] count towards mask_prob, as the release sizes it
    n = np.minimum(np.minimum(P, candidate.sum(1)), np.maximum(1, np.rint(real * cfg.mask_prob))).astype(np.int64)
    # a random order of each row's candidates (the others sort last), the first P of it
    order = np.argsort(np.where(candidate, uniform(seed, keys, T, 0), 2.0), axis=1)[:, :P]  # (B, P)
    chosen = np.arange(P)[None, :] < n[:, None]  # (B, P)
    positions = np.where(chosen, order, 0)
    labels = np.where(chosen, np.take_along_axis(input_ids, positions, 1), -100)  # (B, P)
    replaced = np.where(uniform(seed, keys, P, 1) < 0.85, split["mask_id"], labels)
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
    Its mask is keyed by the example, not the instance: every time an instance is fed it gets a fresh mask (the
    release masks inside the training graph)."""
    n = len(data["input_ids"])
    instances = np.array([epoch_order(n, seed, int(i) // n)[int(i) % n] for i in ids])
    input_ids = data["input_ids"][instances].astype(np.int64)  # (B, T)
    masked, positions, labels = mask_tokens(input_ids, ids, seed, data, cfg)  # keyed by the example: dynamic
    uniform_tokens = data["normal"][(uniform(seed, ids, positions.shape[1], 5) * len(data["normal"])).astype(np.int64)]
    return {"input_ids": torch.from_numpy(masked),
            "token_type_ids": torch.from_numpy(data["token_type_ids"][instances].astype(np.int64)),
            "attention_mask": torch.from_numpy((input_ids != data["pad_id"]).astype(np.int64)),
            "mlm_positions": torch.from_numpy(positions), "mlm_labels": torch.from_numpy(labels),
            # for evaluation only: the tokens a mask may choose, and uniformly random replacements of the masked ones
            "content": torch.from_numpy(~np.isin(input_ids, data["never_masked"])),
            "uniform_tokens": torch.from_numpy(uniform_tokens)}


def sample_replacements(input_ids, positions, labels, logits):
    """Put the generator's samples in place of the chosen tokens (Gumbel-max: argmax of logits + Gumbel noise is a
    sample of softmax(logits), temperature 1). Returns the corrupted ids (B, T) and the discriminator's labels
    (B, T): 1 only where the sample differs from the original, so a correct guess counts as original (§2)."""
    with torch.no_grad():  # the samples are data for the discriminator: no gradient flows back through them (§2)
        u = torch.rand(logits.shape, device=logits.device)
        return replace_tokens(input_ids, positions, labels, (logits.float() - torch.log(-torch.log(u))).argmax(-1))


def replace_tokens(input_ids, positions, labels, tokens):
    """`tokens` (B, P) in place of the masked ones: the corrupted ids (B, T) and the labels (B, T), 1 = replaced."""
    chosen = labels != -100
    kept = input_ids.gather(1, positions)  # (B, P): what the unused slots (at [CLS]) put back
    fake = input_ids.scatter(1, positions, torch.where(chosen, tokens, kept))  # (B, T)
    replaced = torch.zeros_like(fake, dtype=torch.bool).scatter(1, positions, chosen & (tokens != labels))  # (B, T)
    return fake, replaced


def compute_loss(model, batch):
    """Generator MLM cross-entropy over the masked positions + λ x the discriminator's sigmoid cross-entropy over
    every real token (§2, Equation 1). Returns the loss and metrics."""
    labels = batch["mlm_labels"]  # (B, P), -100 in the unused slots
    mlm_logits, rtd_logits, replaced = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                             batch["mlm_positions"], labels)  # (B, P, V), (B, T), (B, T)
    mlm_loss = F.cross_entropy(mlm_logits.flatten(0, 1).float(), labels.flatten())  # (B·P, V), (B·P,); -100 ignored
    real = batch["attention_mask"].bool()  # [CLS] and [SEP] count, padding does not
    per_token = F.binary_cross_entropy_with_logits(rtd_logits.float(), replaced.float(), reduction="none")
    rtd_loss = (per_token * real).sum() / real.sum()
    guess, chosen, share = (rtd_logits > 0) & real, labels != -100, replaced.sum() / real.sum()
    metrics = {"mlm_loss": mlm_loss, "rtd_loss": rtd_loss,
               "mlm_acc": ((mlm_logits.argmax(-1) == labels) & chosen).sum() / chosen.sum(),
               "rtd_acc": ((guess == replaced) & real).sum() / real.sum(),
               "precision": (guess & replaced).sum() / guess.sum().clamp(min=1),
               "recall": (guess & replaced).sum() / replaced.sum().clamp(min=1),
               "replaced": share,  # 1 - this is the accuracy of always answering "original"
               "const_loss": binary_entropy(share),  # the loss of the best constant guess
               "auc": roc_auc(rtd_logits, replaced, batch["content"])}  # [CLS], [SEP] are never replaced: left out
    if not model.training:  # evaluation: the same positions filled with uniformly random tokens, easier to spot
        fake, easy = replace_tokens(batch["input_ids"], batch["mlm_positions"], labels, batch["uniform_tokens"])
        metrics["auc_uniform"] = roc_auc(model.detect(fake, batch["attention_mask"], batch["token_type_ids"]), easy,
                                         batch["content"])
    return mlm_loss + getattr(model, "module", model).cfg.disc_weight * rtd_loss, metrics  # DDP wraps the model


def binary_entropy(p):
    """The sigmoid cross-entropy of always answering p: the best a discriminator that ignores its input can do."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def roc_auc(scores, positive, where):
    """Area under the ROC curve of `scores` (B, T) for telling `positive` from the other tokens `where` is set: the
    chance that a random replaced token scores above a random original one (0.5 = guessing). Threshold-free, unlike
    accuracy against a constant that is right 85% of the time. Without a host sync: tokens left out rank lowest."""
    s = torch.where(where, scores.float(), float("-inf")).flatten()  # (B·T,)
    ranks = s.argsort().argsort() + 1 - (~where).sum()  # 1..n among the tokens kept
    pos = (positive & where).flatten()  # (B·T,)
    n_pos = pos.sum()
    return ((ranks * pos).sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (where.sum() - n_pos)).clamp(min=1)


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
    """How finetune.py fine-tunes the discriminator on a task: Table 7 (Appendix B), base size."""
    lr: float = 1e-4  # 3e-4 small, 1e-4 base, 5e-5 large, Table 7
    layer_decay: float = 0.8  # each layer down from the top learns 0.8 times as fast (0.9 large), Table 7
    batch_size: int = 32  # Table 7
    epochs: int = 3  # 10 for RTE and STS-B, Table 7
    warmup: float = 0.1  # a fraction of the steps, then linear decay, Table 7
    weight_decay: float = 0.0  # Table 7
    dropout: float = 0.1  # Table 7
    head_dropout: float = 0.1  # the release's classification head
    max_len: int = 128  # the release's max_seq_length


RECIPES = {
    "paper": Recipe(),
    "small": Recipe(lr=3e-4),  # Table 7
    "large": Recipe(lr=5e-5, layer_decay=0.9),  # Table 7
    # ours: the tiny preset, a thousand times smaller than the paper's model, with a step to match
    "tiny": Recipe(lr=1e-3, epochs=10),
}


def encode_inputs(tokenizer, first, second=None, max_len=128):
    """Token ids and segment ids of each example: [CLS] A [SEP] B [SEP] with segments 0 ... 0 1 ... 1 (BERT's
    format, as the release), or [CLS] A [SEP] for one text; the longer text is cut first to fit max_len."""
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
    """ElectraForSequenceClassification on the discriminator: the state of [CLS] through dropout, a dense layer with
    GELU, dropout and a linear layer to the labels (the release's classification head; ELECTRA keeps no pooler)."""

    def __init__(self, model, num_labels, recipe):
        super().__init__()
        self.model = model
        self.drop = nn.Dropout(recipe.head_dropout)
        self.dense = nn.Linear(model.cfg.hidden, model.cfg.hidden)
        self.out = nn.Linear(model.cfg.hidden, num_labels)
        model._init(self.dense)
        model._init(self.out)
        self.pad_id = model.tokenizer.token_to_id(SPECIALS["pad"])
        self.max_tokens = model.cfg.max_len

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, T) -> (B, labels)
        h = self.model.encode(input_ids, attention_mask, token_type_ids)[:, 0]  # (B, H): [CLS]
        h = common.ACTIVATIONS[self.model.cfg.activation](self.dense(self.drop(h)))  # (B, H)
        return self.out(self.drop(h))


def finetune_loss(clf, batch, recipe):
    """The task's loss alone. Returns it and the logits (B, labels)."""
    logits = clf(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return task_loss(logits, batch["labels"]), logits


# --- demo ---


def demo_arguments(p):
    p.add_argument("--detect", dest="demo", default=None, metavar="TEXT",
                   help="print each token of TEXT with the probability that it was replaced")


def demo(model, args):
    """After --train: the discriminator exported and its detection report. Then each token of --detect with the
    discriminator's probability that it was replaced (after training: a fixed sentence with one word swapped)."""
    if args.train:  # the discriminator is kept and the generator thrown away (§2)
        export(model, args.out)
        print(f"the discriminator and the generator, in the Hugging Face layout: {Path(args.out) / 'discriminator'}, "
              f"{Path(args.out) / 'generator'}")
        report(Path(args.out) / "metrics.jsonl")
    text = args.demo if args.demo is not None else "return the value of the list , or none if the if is empty ."
    tok, device = model.tokenizer, next(model.parameters()).device
    special = {role: tok.token_to_id(token) for role, token in SPECIALS.items()}
    ids = [special["cls"], *tok.encode(text, add_special_tokens=False).ids, special["sep"]]
    ids = torch.tensor([ids[:model.cfg.max_len]], device=device)  # (1, T)
    with torch.no_grad():
        probs = model.detect(ids)[0].float().sigmoid()  # (T,)
    print(text)
    print(f"{'token':>16} p(replaced)")
    for i, p in zip(ids[0, 1:-1].tolist(), probs[1:-1].tolist()):
        print(f"{tok.id_to_token(i):>16} {p:.3f}{'  replaced' if p > 0.5 else ''}")


def report(metrics_path):
    """The last evaluation's replaced token detection, side by side: plausible (generator) and easy (uniform) fakes."""
    v = [r for r in map(json.loads, Path(metrics_path).read_text().splitlines()) if "val_auc" in r][-1]
    print(f"discriminator at step {v['step']}, validation (means over batches):   generator samples   uniform random\n"
          f"  ROC AUC, content tokens                                {v['val_auc']:>10.3f}"
          f"   {v['val_auc_uniform']:>14.3f}\n"
          f"  loss (the best constant guess)                 {v['val_rtd_loss']:>10.3f} ({v['val_const_loss']:.3f})\n"
          f"  accuracy (answering 'original' everywhere)     {v['val_rtd_acc']:>10.2%} ({1 - v['val_replaced']:.2%})\n"
          f"  precision, recall of 'replaced'                {v['val_precision']:>10.2f}, {v['val_recall']:.2f}")


# --- checkpoints: the Hugging Face layout ---

# ElectraForPreTraining's and ElectraForMaskedLM's names -> ours, replaced in this order; TOWER is the generator or
# the discriminator
HF_NAMES = [
    ("embeddings.word_embeddings", "embeddings.tokens"),
    ("embeddings.position_embeddings", "embeddings.positions"),
    ("embeddings.token_type_embeddings", "embeddings.types"),
    ("embeddings.LayerNorm", "embeddings.ln"),
    ("embeddings_project", "TOWER.project"),
    ("encoder.layer.", "TOWER.blocks."),
    ("attention.self.query", "attn.q"),
    ("attention.self.key", "attn.k"),
    ("attention.self.value", "attn.v"),
    ("attention.output.dense", "attn.proj"),
    ("attention.output.LayerNorm", "ln1"),
    ("intermediate.dense", "mlp.fc"),
    ("output.dense", "mlp.proj"),
    ("output.LayerNorm", "ln2"),
    ("discriminator_predictions.dense_prediction", "rtd.out"),
    ("discriminator_predictions.dense", "rtd.dense"),
    ("generator_predictions.dense", "mlm.dense"),
    ("generator_predictions.LayerNorm", "mlm.ln"),
    ("generator_lm_head.bias", "head.bias"),
]


def tower_names(tower):
    return [(theirs, ours.replace("TOWER", tower)) for theirs, ours in HF_NAMES]


def load_pretrained(path, base=None, generator=None):
    """An `electra` discriminator folder in the Hugging Face layout (ElectraForPreTraining or ElectraModel; with or
    without the `electra.` prefix) and, if given, its generator's folder (ElectraForMaskedLM), whose embeddings
    are the shared ones. Parts the files lack are initialised and listed: without a generator, all of it."""
    hf, sd = read_pretrained(path, "electra")
    hidden = hf["hidden_size"]  # the preset of this width supplies what the file does not say
    base = base or next((c for c in PRESETS.values() if c.hidden == hidden), PRESETS["base"])
    cfg = dataclasses.replace(base, vocab_size=hf["vocab_size"], max_len=hf["max_position_embeddings"],
                              type_vocab=hf.get("type_vocab_size", base.type_vocab), layers=hf["num_hidden_layers"],
                              hidden=hf["hidden_size"], heads=hf["num_attention_heads"], ffn=hf["intermediate_size"],
                              activation=hf.get("hidden_act", base.activation), eps=hf.get("layer_norm_eps", base.eps),
                              dropout=hf.get("hidden_dropout_prob", base.dropout),
                              embed=hf.get("embedding_size", hidden))
    if cfg.activation not in common.ACTIVATIONS:
        raise UserError(f"{path}: activation {cfg.activation!r} is not supported")
    sd = {k.removeprefix("electra."): v for k, v in sd.items()}
    skip = ("generator_lm_head.weight", "embeddings.position_ids", "embeddings.token_type_ids")  # tied; buffers
    ours = rename(sd, tower_names("discriminator"), skip)
    if generator is not None:
        gen_hf, gen_sd = read_pretrained(generator, "electra")
        g = gen_hf["hidden_size"]
        cfg = dataclasses.replace(cfg, gen_size=g / hidden)
        same = ("vocab_size", "embedding_size", "num_hidden_layers", "max_position_embeddings", "type_vocab_size")
        sized = (gen_hf["num_attention_heads"], gen_hf["intermediate_size"]) == (max(1, g // 64), 4 * g)
        if any(gen_hf.get(k) != hf.get(k) for k in same) or not sized:
            raise UserError(f"--from-pretrained {generator}: not a generator of {path}'s shape")
        gen = rename({k.removeprefix("electra."): v for k, v in gen_sd.items()}, tower_names("generator"), skip)
        shared = {k: gen.pop(k) for k in list(gen) if k.startswith("embeddings.")}
        if any(k in ours and not torch.equal(v, ours[k]) for k, v in shared.items()):
            print(f"warning: {generator}'s embeddings differ from {path}'s; the discriminator's are used for both",
                  file=sys.stderr)
        ours.update({k: v for k, v in gen.items() if k.startswith(("generator.", "mlm.", "head."))})
    model = Model(cfg)
    load_weights(model, ours, path, optional=("generator.", "mlm.", "head.bias", "rtd."))
    model.tokenizer = load_tokenizer(path)
    return model


# ElectraForSequenceClassification's head -> ours
HF_HEAD = [("classifier.dense", "dense"), ("classifier.out_proj", "out")]


def hf_config(cfg, architecture, tower="discriminator"):
    """The config.json of a Hugging Face ELECTRA discriminator of this shape, or of its generator."""
    g = cfg.gen_hidden
    size = ((cfg.hidden, cfg.heads, cfg.ffn) if tower == "discriminator" else (g, max(1, g // 64), 4 * g))
    return {"architectures": [architecture], "model_type": "electra", "vocab_size": cfg.vocab_size,
            "embedding_size": cfg.embed, "hidden_size": size[0], "num_hidden_layers": cfg.layers,
            "num_attention_heads": size[1], "intermediate_size": size[2], "hidden_act": cfg.activation,
            "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
            "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.type_vocab, "layer_norm_eps": cfg.eps,
            "initializer_range": cfg.init_std, "pad_token_id": 0}


def export(model, folder):
    """The discriminator, the model ELECTRA keeps (§2), as a Hugging Face ElectraForPreTraining folder in
    `folder`/discriminator, and the generator as an ElectraForMaskedLM in `folder`/generator."""
    for tower, architecture, heads in (("discriminator", "ElectraForPreTraining", ("rtd.",)),
                                       ("generator", "ElectraForMaskedLM", ("mlm.", "head.bias"))):
        kept = {k: v for k, v in model.state_dict().items() if k.startswith(("embeddings.", f"{tower}.", *heads))}
        sd = unrename(kept, tower_names(tower))
        sd = {k if k.startswith(("discriminator_", "generator_")) else "electra." + k: v for k, v in sd.items()}
        write_pretrained(Path(folder) / tower, sd, hf_config(model.cfg, architecture, tower), model.tokenizer)


def export_classifier(clf, folder, labels, regression):
    """A fine-tuned Classifier as a Hugging Face ElectraForSequenceClassification folder."""
    encoder = {k.removeprefix("model."): v for k, v in clf.state_dict().items()
               if k.startswith(("model.embeddings.", "model.discriminator."))}
    sd = {"electra." + k: v for k, v in unrename(encoder, tower_names("discriminator")).items()}
    sd.update(unrename({k: v for k, v in clf.state_dict().items() if not k.startswith("model.")}, HF_HEAD))
    config = {**hf_config(clf.model.cfg, "ElectraForSequenceClassification"), **label_config(labels, regression)}
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
    """Layer-wise learning-rate decay (Table 7), as the release's optimization.py: the task head at the full rate, the
    discriminator's layer i at lr · decay^(L + 1 − i), its embeddings at lr · decay^(L + 2). The release counts a
    pooler ELECTRA no longer has, so its top layer learns at decay², not decay. ELECTRA's one exception to the
    shared plumbing; weight decay on matrices and embeddings, as elsewhere."""
    L = clf.model.cfg.layers

    def depth(name):
        if name.startswith(("model.embeddings.", "model.discriminator.project.")):
            return 0
        found = re.match(r"model\.discriminator\.blocks\.(\d+)\.", name)
        return int(found.group(1)) + 1 if found else L + 2  # L + 2: the task head

    groups = {}
    for name, p in clf.named_parameters():
        if p.requires_grad:
            rate = recipe.lr * recipe.layer_decay ** (L + 2 - depth(name))
            groups.setdefault((rate, recipe.weight_decay if p.dim() >= 2 else 0.0), []).append(p)
    return [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in groups.items()]


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
