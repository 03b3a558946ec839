"""ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators (Clark, Luong, Le,
Manning, 2020; § numbers of arXiv 2003.10555v1). What this file changes relative to bert.py:
- Replaced token detection: a small generator (an MLM) fills the masked positions with SAMPLED
  tokens; the discriminator, the model kept, tells for EVERY token whether it was replaced (§2).
- Generator and discriminator share one embedding module; the generator is smaller (§3.2).
- Loss = generator MLM + 50 x discriminator; no gradient flows through the samples (§2).
- Masking: 15% (25% for large), 85% [MASK] / 15% unchanged, no random tokens; dynamic (release).
- No next sentence prediction, no pooler: one or two segments of one document each (release).
- Embedding size E, with a projection to each encoder's width where they differ (Table 6).
- Adam with lr 5e-4 (small) / 2e-4 (base), 10,000 warmup steps, then linear decay (Table 6).
"""

import dataclasses
import functools
import json
import re
import sys
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
    vocab_size: int = 30522  # uncased WordPiece, BERT §3
    max_len: int = 512
    type_vocab: int = 2  # segment A / B, BERT §3
    embed: int = 768  # E, shared by both encoders (Table 6)
    layers: int = 12
    hidden: int = 768  # the discriminator's
    heads: int = 12
    ffn: int = 3072
    gen_size: float = 1 / 3  # its width / the discriminator's (§3.2, Table 6); heads w/64, FFN 4w
    activation: str = "gelu"  # exact erf GELU, BERT §A.2
    eps: float = 1e-12
    dropout: float = 0.1  # all layers, BERT §A.2
    init_std: float = 0.02  # initializer_range of the release's config
    # objective
    mask_prob: float = 0.15  # §2 (25% for large, Table 6)
    max_predictions: int = 79  # per sequence: int((mask_prob + 0.005) * seq_len), release
    short_seq_prob: float = 0.05  # a random target length instead of the full one, release
    disc_weight: float = 50.0  # λ, §2
    # training
    seq_len: int = 512  # Table 6
    batch_size: int = 256  # Table 6
    grad_accum: int = 1
    steps: int = 766_000  # Table 6
    lr: float = 2e-4  # Table 6
    warmup: int = 10_000
    # the release decays from step 0, peak * (1 - t/N) * min(1, t/w): within w/N of ours
    schedule: str = "linear"
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    # ours: torch's AdamW; the release's AdamWeightDecay: no bias correction (docs/gpt-and-bert.md)
    adam_eps: float = 1e-6
    clip: float = 1.0
    log_interval: int = 100
    eval_interval: int = 1000
    eval_examples: int = 1024  # the same validation examples whatever the batch size

    @property
    def gen_hidden(self):  # the generator's width, §3.2
        return round(self.hidden * self.gen_size)


def _sized(layers, hidden, **kw):
    """A model of L layers and H hidden: H/64 heads and a 4H feed-forward layer."""
    return Config(**{"layers": layers, "hidden": hidden, "heads": hidden // 64, "ffn": 4 * hidden,
                     **kw})


PRESETS = {
    # ours: learns visibly in a few minutes on 2 CPU cores; no dropout for such a short run; weights
    # from N(0, 0.08): at 0.02 so narrow a model's attention stays uniform long; sequences of 32: at
    # 128 it ignores word order (docs/diff-bert-electra.md)
    "tiny": _sized(2, 128, embed=128, gen_size=1 / 4, vocab_size=4096, max_len=128, dropout=0.0,
                   init_std=0.08, max_predictions=5, seq_len=32, batch_size=64, steps=3000, lr=1e-3,
                   warmup=200, log_interval=100, eval_interval=500, eval_examples=1024),
    # the paper's ELECTRA-Small: 13,549,057 parameters in the discriminator (Table 6; its generator
    # 1/4 the width)
    "small": _sized(12, 256, embed=128, gen_size=1 / 4, max_predictions=19, seq_len=128,
                    batch_size=128, steps=1_000_000, lr=5e-4),
    "base": Config(),  # 109,483,009 in the discriminator, 33,740,602 in the generator
    # ELECTRA-400K; the released ELECTRA-Large trained for 1.75M steps
    "large": _sized(24, 1024, embed=1024, gen_size=1 / 4, mask_prob=0.25, max_predictions=130,
                    batch_size=2048, steps=400_000),
}


# --- model ---


class Embeddings(nn.Module):
    """Token, position and segment embeddings of size E, summed and normalised; ONE for both."""

    def __init__(self, cfg):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.embed)
        self.types = nn.Embedding(cfg.type_vocab, cfg.embed)  # segment A / B, BERT §3
        self.ln = nn.LayerNorm(cfg.embed, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):  # (B, T) -> (B, T, E)
        T = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(torch.arange(T, device=input_ids.device))
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = x + self.types(types)
        return self.drop(self.ln(x))  # summed, then LayerNorm, BERT §3, Figure 2


class Encoder(nn.Module):
    """Blocks of width `hidden` on the shared embeddings, after a Linear(E, hidden) if E differs
    (§3.2, Table 6)."""

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
    """A small generator (a masked LM) and the discriminator, two encoders on shared embeddings: the
    generator fills the masked positions with samples, the discriminator tells for every token
    whether it was replaced (§2)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)  # ONE module that both encoders read, not a copy (§3.2)
        g = cfg.gen_hidden
        self.generator = Encoder(cfg, g, max(1, g // 64), 4 * g)  # heads and FFN as the release
        self.discriminator = Encoder(cfg, cfg.hidden, cfg.heads, cfg.ffn)
        self.mlm = nn.ModuleDict({"dense": nn.Linear(g, cfg.embed),  # the MLM head's transform
                                  "ln": nn.LayerNorm(cfg.embed, eps=cfg.eps)})
        self.head = nn.Linear(cfg.embed, cfg.vocab_size)
        self.head.weight = self.embeddings.tokens.weight  # tied: one tensor, not a copy; own bias
        self.rtd = nn.ModuleDict({"dense": nn.Linear(cfg.hidden, cfg.hidden),
                                  "out": nn.Linear(cfg.hidden, 1)})
        self.apply(self._init)
        for m in (self.rtd.out, self.generator.project, self.discriminator.project):
            # layers the release builds with tf.layers.dense's default: Glorot uniform
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
        self.tokenizer = None

    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            s = self.cfg.init_std
            nn.init.trunc_normal_(m.weight, std=s, a=-2 * s, b=2 * s)  # cut at 2 std, release
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # a shared or tied tensor counts once

    def encode(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, T) -> (B, T, H)
        """The discriminator's final states."""
        return self.discriminator(self.embeddings(input_ids, token_type_ids),
                                  common.attention_mask(attention_mask))

    def detect(self, input_ids, attention_mask=None, token_type_ids=None):
        """The discriminator's logit (B, T) that each token was replaced."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        h = common.ACTIVATIONS[self.cfg.activation](self.rtd.dense(h))  # (B, T, H)
        return self.rtd.out(h).squeeze(-1)  # (B, T)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None,
                labels=None):
        """Replaced token detection in one call, so that DDP and torch.compile see the whole step:
        the generator's MLM logits (B, P, V) at the masked `positions` (B, P); tokens sampled from
        them in place of the originals `labels` (B, P); the discriminator's logits (B, T) on the
        result, and its labels (B, T)."""
        h = self.generator(self.embeddings(input_ids, token_type_ids),
                           common.attention_mask(attention_mask))
        h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, Hg): masked only
        h = common.ACTIVATIONS[self.cfg.activation](self.mlm.dense(h))  # MLM head: dense, GELU,
        h = self.mlm.ln(h)  # then LayerNorm (B, P, E)
        logits = self.head(h)  # (B, P, V): scored against the token embeddings
        fake, replaced = sample_replacements(input_ids, positions, labels, logits)  # (B, T), (B, T)
        return logits, self.detect(fake, attention_mask, token_type_ids), replaced

    @classmethod
    def from_pretrained(cls, path, base=None, generator=None):
        """A Hugging Face-format folder and, if given, its generator's (the checkpoints section)."""
        return load_pretrained(path, base, generator)


def flops_per_token(model, cfg):
    """Training FLOPs per token, for MFU: 6 per weight a token is multiplied by (2 forward, 4
    backward), plus 12·L·H·T for attention. Embedding tables are looked up, not multiplied.
    Both encoders multiply at every position; the generator's MLM head at the max_predictions
    masked slots."""
    P, T = cfg.max_predictions, cfg.seq_len
    weights = (numel(model.generator, model.discriminator, model.rtd)
               + numel(model.mlm, model.head) * P / T)
    return 6 * weights + 12 * cfg.layers * (cfg.hidden + cfg.gen_hidden) * T


# --- objective ---


def load_data(corpus, tokenizer, out, cfg):
    """The training examples of each split (make_instances), made once from the token cache and
    cached beside it, and what masking needs to know about the vocabulary."""
    data = cache_tokens(corpus, tokenizer, Path(out) / "cache")
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    # what make_instances reads
    key = [Path(__file__).stem, cfg.seq_len, cfg.short_seq_prob]
    for name, split in data.items():
        instances = make_instances(split, cfg, np.random.default_rng(12345), special)  # its seed
        split.update(cached(split["folder"] / f"{name}.instances", key, instances,
                            "making the training examples"))
        split["special"], split["mask_id"] = np.array(list(special.values())), special["mask"]
        split["pad_id"] = special["pad"]
        # padding, start and separator are never masked; the unknown token may be, as in the release
        split["never_masked"] = np.array([special["pad"], special["cls"], special["sep"]])
        # the random replacements
        split["normal"] = np.setdiff1d(np.arange(tokenizer.get_vocab_size()), split["special"])
        if not len(split["input_ids"]):
            raise UserError("the corpus is too small: a split made no training examples")
    return data


def make_instances(split, cfg, rng, special):
    """[CLS] A [SEP] B [SEP], as the release's build_pretraining_dataset: a document's sentences
    gathered up to a target length (5% of the time a random shorter one), then cut in two at a
    sentence near the middle, or 10% of the time kept as one segment [CLS] A [SEP]. An example
    never crosses a document; there is no next sentence prediction (release).
    A sentence may join A after an earlier one went to B (the release's rule below), so the rows
    themselves are stored, `input_ids` and `token_type_ids` (N, T), written as they are made."""
    tokens, sents, docs = split["tokens"], split["sentences"], split["documents"]
    T = cfg.seq_len

    def new_target():
        return rng.integers(5, T + 1) if rng.random() < cfg.short_seq_prob else T

    target = new_target()
    for block in in_blocks(len(docs), "making instances"):
        bounds, rows, row_types = docs[block:block + 4096].tolist(), [], []
        base = bounds[0][0]
        offsets = sents[base:bounds[-1][1]].tolist()  # offsets[i - base]: sentence i's (start, end)
        for first, last in bounds:
            chunk, length = first, 0  # the chunk: sentences chunk..k
            for k in range(first, last):
                length += offsets[k - base][1] - offsets[k - base][0]
                if length < target and k < last - 1:
                    continue
                one_segment = rng.random() < 0.1  # [CLS] A [SEP] alone, as classification inputs
                half = (target - 3) // 2
                a, b, n_a, n_b = [], [], 0, 0  # each segment's sentences (token ranges) and length
                for start, end in offsets[chunk - base:k + 1 - base]:
                    # A while it is short of half (a coin decides at the crossing), then B, as the
                    # release
                    fits = n_a + end - start < half  # A, with this sentence, is still short of half
                    crossing = not n_b and n_a < half  # this sentence crosses half: a coin decides
                    if one_segment or not n_a or fits or (crossing and rng.random() < 0.5):
                        a.append(tokens[start:end])
                        n_a += end - start
                    else:
                        b.append(tokens[start:end])
                        n_b += end - start
                a = np.concatenate(a)[:T - 2]
                b = np.concatenate(b or [a[:0]])[:max(0, T - len(a) - 3)]
                # the row, padded
                ids, types = np.full(T, special["pad"], tokens.dtype), np.zeros(T, np.int8)
                ids[0], ids[1:len(a) + 1], ids[len(a) + 1] = special["cls"], a, special["sep"]
                if len(b):  # segment B and its separator, when there is a B
                    ids[len(a) + 2:len(a) + len(b) + 2] = b
                    ids[len(a) + len(b) + 2] = special["sep"]
                    types[len(a) + 2:len(a) + len(b) + 3] = 1
                rows.append(ids)
                row_types.append(types)
                chunk, length, target = k + 1, 0, new_target()
        yield {"input_ids": np.array(rows, tokens.dtype).reshape(-1, T),
               "token_type_ids": np.array(row_types, np.int8).reshape(-1, T)}


# uniform()'s streams (a keyed hash, in the shared plumbing): the same seed, key and stream give the
# same numbers in any process, so a mask is a function of its key alone
CHOOSE, FATE, UNIFORM_FAKE = 0, 1, 5  # which tokens; what becomes of each; evaluation's easy fakes


def mask_tokens(input_ids, keys, seed, split, cfg):
    """Choose mask_prob of each row's tokens (never the start, separator or padding; at most
    max_predictions); of those 85% become the mask token and 15% stay, with no random tokens: the
    generator supplies those (release). Random numbers are keyed by `keys`. Returns the new ids (B,
    T), and the chosen positions and their labels (B, P), padded with label -100. The release draws
    positions with replacement, so a few repeat; ours are distinct."""
    B, T = input_ids.shape
    P = cfg.max_predictions
    candidate = ~np.isin(input_ids, split["never_masked"])  # (B, T)
    real = (input_ids != split["pad_id"]).sum(1)  # [CLS], [SEP] count towards mask_prob (release)
    n = np.minimum(np.minimum(P, candidate.sum(1)), np.maximum(1, np.rint(real * cfg.mask_prob)))
    n = n.astype(np.int64)  # (B,)
    # a random order of each row's candidates (the others sort last), the first P of it
    order = np.argsort(np.where(candidate, uniform(seed, keys, T, CHOOSE), 2.0), axis=1)[:, :P]
    chosen = np.arange(P)[None, :] < n[:, None]  # (B, P)
    positions = np.where(chosen, order, 0)
    labels = np.where(chosen, np.take_along_axis(input_ids, positions, 1), -100)  # (B, P)
    replaced = np.where(uniform(seed, keys, P, FATE) < 0.85, split["mask_id"], labels)
    ids = input_ids.copy()
    rows = np.broadcast_to(np.arange(B)[:, None], (B, P))  # each slot's row
    ids[rows[chosen], positions[chosen]] = replaced[chosen]
    return ids, positions, labels


@functools.lru_cache(maxsize=3)  # training's epoch and the next, and validation's
def epoch_order(n, seed, epoch):
    """The order of the n instances in an epoch: a fresh permutation each epoch."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def get_batch(data, ids, seed, cfg):
    """Example `i` is instance epoch_order[i % n] of epoch i // n. Its mask is keyed by the example,
    not the instance: every time an instance is fed it gets a fresh mask (the release masks inside
    the training graph)."""
    n = len(data["input_ids"])
    instances = np.array([epoch_order(n, seed, int(i) // n)[int(i) % n] for i in ids])
    input_ids = data["input_ids"][instances].astype(np.int64)  # (B, T)
    keys = ids  # the mask is a function of the example: a fresh one every epoch (DYNAMIC, release)
    masked, positions, labels = mask_tokens(input_ids, keys, seed, data, cfg)
    # the easy fakes evaluation scores beside the generator's: uniformly random tokens
    pick = uniform(seed, ids, positions.shape[1], UNIFORM_FAKE) * len(data["normal"])
    uniform_tokens = data["normal"][pick.astype(np.int64)]
    return {"input_ids": torch.from_numpy(masked),
            "token_type_ids": torch.from_numpy(data["token_type_ids"][instances].astype(np.int64)),
            "attention_mask": torch.from_numpy((input_ids != data["pad_id"]).astype(np.int64)),
            "mlm_positions": torch.from_numpy(positions), "mlm_labels": torch.from_numpy(labels),
            # evaluation only: the tokens a mask may choose, uniformly random replacements of them
            "content": torch.from_numpy(~np.isin(input_ids, data["never_masked"])),
            "uniform_tokens": torch.from_numpy(uniform_tokens)}


def sample_replacements(input_ids, positions, labels, logits):
    """Put the generator's samples in place of the chosen tokens (Gumbel-max: argmax of logits +
    Gumbel noise is a sample of softmax(logits), temperature 1). Returns the corrupted ids (B, T)
    and the discriminator's labels (B, T): 1 only where the sample differs from the original, so a
    correct guess counts as original (§2)."""
    # the samples are data for the discriminator: no gradient flows back through them (§2)
    with torch.no_grad():
        u = torch.rand(logits.shape, device=logits.device)
        gumbel = -torch.log(-torch.log(u))  # Gumbel(0, 1) noise
        samples = (logits.float() + gumbel).argmax(-1)  # (B, P): a draw from softmax(logits) each
        return replace_tokens(input_ids, positions, labels, samples)


def replace_tokens(input_ids, positions, labels, tokens):
    """`tokens` (B, P) in place of the masked ones: ids (B, T) and labels (B, T), 1 = replaced."""
    chosen = labels != -100  # (B, P); an unused slot points at position 0, [CLS]
    kept = input_ids.gather(1, positions)  # (B, P): the tokens there, which unused slots write back
    fake = input_ids.scatter(1, positions, torch.where(chosen, tokens, kept))  # (B, T)
    replaced = torch.zeros_like(fake, dtype=torch.bool)  # (B, T)
    replaced = replaced.scatter(1, positions, chosen & (tokens != labels))
    return fake, replaced


def compute_loss(model, batch, cfg):
    """Generator MLM cross-entropy over the masked positions + λ x the discriminator's sigmoid
    cross-entropy over every real token (§2). Returns the loss and metrics."""
    labels = batch["mlm_labels"]  # (B, P), -100 in the unused slots
    # (B, P, V), (B, T), (B, T)
    mlm_logits, rtd_logits, replaced = model(batch["input_ids"], batch["attention_mask"],
                                             batch["token_type_ids"], batch["mlm_positions"],
                                             labels)
    # (B·P, V) against (B·P,); -100 is ignored
    mlm_loss = F.cross_entropy(mlm_logits.flatten(0, 1).float(), labels.flatten())
    real = batch["attention_mask"].bool()  # [CLS] and [SEP] count, padding does not
    per_token = F.binary_cross_entropy_with_logits(rtd_logits.float(), replaced.float(),
                                                   reduction="none")
    rtd_loss = (per_token * real).sum() / real.sum()
    guess, chosen, share = (rtd_logits > 0) & real, labels != -100, replaced.sum() / real.sum()
    metrics = {"mlm_loss": mlm_loss, "rtd_loss": rtd_loss,
               "mlm_acc": ((mlm_logits.argmax(-1) == labels) & chosen).sum() / chosen.sum(),
               "rtd_acc": ((guess == replaced) & real).sum() / real.sum(),
               "precision": (guess & replaced).sum() / guess.sum().clamp(min=1),
               "recall": (guess & replaced).sum() / replaced.sum().clamp(min=1),
               "replaced": share,  # 1 - this is the accuracy of always answering "original"
               "const_loss": binary_entropy(share),  # the loss of the best constant guess
               "auc": roc_auc(rtd_logits, replaced, batch["content"])}  # never [CLS], [SEP]
    if not model.training:  # evaluation: the same positions filled with uniformly random tokens
        fake, easy = replace_tokens(batch["input_ids"], batch["mlm_positions"], labels,
                                    batch["uniform_tokens"])
        logits = model.detect(fake, batch["attention_mask"], batch["token_type_ids"])
        metrics["auc_uniform"] = roc_auc(logits, easy, batch["content"])
    return mlm_loss + cfg.disc_weight * rtd_loss, metrics


def binary_entropy(p):
    """Sigmoid cross-entropy of always answering p: the best a discriminator blind to input does."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def roc_auc(scores, positive, where):
    """Area under the ROC curve of `scores` (B, T) for telling `positive` from the other tokens
    `where` is set: the chance that a random replaced token scores above a random original one
    (0.5 = guessing). Threshold-free, unlike accuracy against a constant that is right 85% of the
    time. Without a host sync: tokens left out rank lowest."""
    s = torch.where(where, scores.float(), float("-inf")).flatten()  # (B·T,)
    ranks = s.argsort().argsort() + 1 - (~where).sum()  # 1..n among the tokens kept
    pos = (positive & where).flatten()  # (B·T,)
    n_pos = pos.sum()
    # Mann-Whitney U: the positives' rank sum less its least possible value counts the (positive,
    # negative) pairs in the right order; AUC is the share of all such pairs
    u = (ranks * pos).sum() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * (where.sum() - n_pos)).clamp(min=1)


def configure_optimizer(model, cfg, device):
    """AdamW; weight decay on matrices and embeddings only, never on biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    # matrices and embeddings are 2-D; biases and LayerNorm gains are 1-D and are not decayed
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused: the whole update in one kernel on a CPU or a GPU (4 ms -> 1 ms a step at the tiny size
    # on 2 cores)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps,
                             fused=device.type != "mps")


# --- tokenizer ---


# role -> token, in the order of their ids: [PAD] = 0, as the release's vocabulary
SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _configure(tok):
    """The uncased WordPiece of BERT §3: text normalised, split into words, joined back."""
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # uncased: lowercase, no accents
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def train_tokenizer(docs, cfg):
    """WordPiece: words split into the longest known pieces, continuations marked ## (BERT §3)."""
    import json

    from tokenizers import Tokenizer, models, trainers

    # Ours, for reproducible runs: the trainer numbers each "##" + letter as it meets it in a hash
    # map, whose order changes from run to run, and breaks ties between equally frequent merges by
    # those numbers. A first pass (no merges) lists them; the second takes them in sorted order, so
    # that a corpus always gives the same vocabulary.
    sentences, pieces = [s for doc in docs for s in doc], []
    for size in (0, cfg.vocab_size):
        tok = _configure(Tokenizer(models.WordPiece(unk_token="[UNK]")))
        trainer = trainers.WordPieceTrainer(vocab_size=size, show_progress=False,
                                            special_tokens=list(SPECIALS.values()) + pieces)
        tok.train_from_iterator(sentences, trainer)
        pieces = sorted(t for t in tok.get_vocab() if t.startswith("##") and len(t) == 3)
    spec = json.loads(tok.to_str())  # the pieces were special tokens only to be numbered first
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIALS.values()]
    return Tokenizer.from_str(json.dumps(spec))


def load_tokenizer(folder):
    """The tokenizer of a checkpoint folder: `tokenizer.json`, or the released vocabulary files."""
    from tokenizers import Tokenizer, models

    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the tokenizers library raises its own exception type
            raise UserError(f"{folder / 'tokenizer.json'} is not a readable tokenizer: {e}"
                            .splitlines()[0]) from None
    if (folder / "vocab.txt").exists():
        wordpiece = models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]")
        tok = _configure(Tokenizer(wordpiece))
        tok.add_special_tokens(list(SPECIALS.values()))  # a mask token in a text is one token
        return tok
    return None


# --- fine-tuning ---


@dataclass
class Recipe:
    """How finetune.py fine-tunes the discriminator on a task: Table 7 (Appendix B), base size."""
    lr: float = 1e-4  # 3e-4 small, 1e-4 base, 5e-5 large, Table 7
    layer_decay: float = 0.8  # each layer down learns 0.8 times as fast (0.9 large), Table 7
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
    """Token ids and segment ids of each example: [CLS] A [SEP] B [SEP] with segments
    0 ... 0 1 ... 1 (BERT's format, as the release), or [CLS] A [SEP] for one text; the longer
    text is cut first to fit max_len."""
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    firsts = [e.ids for e in tokenizer.encode_batch(first, add_special_tokens=False)]
    seconds = ([e.ids for e in tokenizer.encode_batch(second, add_special_tokens=False)] if second
               else None)
    out = []
    for a, b in zip(firsts, seconds or [None] * len(firsts)):
        while len(a) + len(b or []) > max_len - (3 if b is not None else 2):
            (a if b is None or len(a) > len(b) else b).pop()
        ids = [special["cls"], *a, special["sep"], *([*b, special["sep"]] if b is not None else [])]
        out.append((ids, [0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2)))
    return out


class Classifier(nn.Module):
    """ElectraForSequenceClassification on the discriminator: the state of [CLS] through dropout, a
    dense layer with GELU, dropout and a linear layer to the labels (the release's classification
    head; ELECTRA keeps no pooler)."""

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


def finetune_groups(clf, recipe):
    """Layer-wise learning-rate decay (Table 7), as the release's optimization.py: the task head at
    the full rate, the discriminator's layer i at lr · decay^(L + 1 − i), its embeddings at lr ·
    decay^(L + 2). The release counts a pooler ELECTRA no longer has, so its top layer learns at
    decay², not decay. Weight decay on matrices and embeddings, as elsewhere."""
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
    return [{"params": params, "lr": rate, "weight_decay": decay}
            for (rate, decay), params in groups.items()]


# --- demo ---


def demo_arguments(p):
    p.add_argument("--detect", dest="demo", default=None, metavar="TEXT",
                   help="print each token of TEXT with the probability that it was replaced")


def demo(model, args):
    """After --train: the detection report. Then each token of --detect with the discriminator's
    probability that it was replaced (after training: a fixed sentence with one word swapped)."""
    if args.train:
        report(Path(args.out) / "metrics.jsonl")
    text = args.demo
    if text is None:
        text = "return the value of the list , or none if the if is empty ."
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
    """The last evaluation's detection of plausible (generator) and easy (uniform) fakes."""
    rows = map(json.loads, Path(metrics_path).read_text().splitlines())
    v = [r for r in rows if "val_auc" in r][-1]
    print(f"discriminator at step {v['step']}, validation (means over batches):"
          f"   generator samples   uniform random\n"
          f"  ROC AUC, content tokens                                {v['val_auc']:>10.3f}"
          f"   {v['val_auc_uniform']:>14.3f}\n"
          f"  loss (the best constant guess)                 {v['val_rtd_loss']:>10.3f}"
          f" ({v['val_const_loss']:.3f})\n"
          f"  accuracy (answering 'original' everywhere)     {v['val_rtd_acc']:>10.2%}"
          f" ({1 - v['val_replaced']:.2%})\n"
          f"  precision, recall of 'replaced'                {v['val_precision']:>10.2f},"
          f" {v['val_recall']:.2f}")


# --- checkpoints: the Hugging Face layout ---

# ElectraForPreTraining's and ElectraForMaskedLM's names -> ours, replaced in this order; TOWER is
# the generator or the discriminator
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
    """An `electra` discriminator folder in the Hugging Face layout (ElectraForPreTraining or
    ElectraModel; with or without the `electra.` prefix) and, if given, its generator's folder
    (ElectraForMaskedLM), whose embeddings are the shared ones. Parts the files lack are initialised
    and listed: without a generator, all of it."""
    hf, sd = read_pretrained(path, "electra")
    hidden = hf["hidden_size"]  # the preset of this width supplies what the file does not say
    base = base or next((c for c in PRESETS.values() if c.hidden == hidden), PRESETS["base"])
    cfg = dataclasses.replace(base, vocab_size=hf["vocab_size"],
                              max_len=hf["max_position_embeddings"],
                              type_vocab=hf.get("type_vocab_size", base.type_vocab),
                              layers=hf["num_hidden_layers"], hidden=hf["hidden_size"],
                              heads=hf["num_attention_heads"], ffn=hf["intermediate_size"],
                              activation=hf.get("hidden_act", base.activation),
                              eps=hf.get("layer_norm_eps", base.eps),
                              dropout=hf.get("hidden_dropout_prob", base.dropout),
                              embed=hf.get("embedding_size", hidden))
    if cfg.activation not in common.ACTIVATIONS:
        raise UserError(f"{path}: activation {cfg.activation!r} is not supported")
    sd = {k.removeprefix("electra."): v for k, v in sd.items()}
    skip = ("generator_lm_head.weight",  # tied
            "embeddings.position_ids", "embeddings.token_type_ids")  # buffers
    ours = rename(sd, tower_names("discriminator"), skip)
    if generator is not None:
        gen_hf, gen_sd = read_pretrained(generator, "electra")
        g = gen_hf["hidden_size"]
        cfg = dataclasses.replace(cfg, gen_size=g / hidden)
        same = ("vocab_size", "embedding_size", "num_hidden_layers", "max_position_embeddings",
                "type_vocab_size")
        sized = ((gen_hf["num_attention_heads"], gen_hf["intermediate_size"])
                 == (max(1, g // 64), 4 * g))
        if any(gen_hf.get(k) != hf.get(k) for k in same) or not sized:
            raise UserError(f"--from-pretrained {generator}: not a generator of {path}'s shape")
        gen = rename({k.removeprefix("electra."): v for k, v in gen_sd.items()},
                     tower_names("generator"), skip)
        shared = {k: gen.pop(k) for k in list(gen) if k.startswith("embeddings.")}
        if any(k in ours and not torch.equal(v, ours[k]) for k, v in shared.items()):
            print(f"warning: {generator}'s embeddings differ from {path}'s; the discriminator's "
                  f"are used for both", file=sys.stderr)
        ours.update({k: v for k, v in gen.items() if k.startswith(("generator.", "mlm.", "head."))})
    model = Model(cfg)
    load_weights(model, ours, path, optional=("generator.", "mlm.", "head.bias", "rtd."))
    model.tokenizer = load_tokenizer(hf.path)  # the folder, or the hub model's
    return model


# ElectraForSequenceClassification's head -> ours
HF_HEAD = [("classifier.dense", "dense"), ("classifier.out_proj", "out")]


def hf_config(cfg, architecture, tower="discriminator"):
    """The config.json of a Hugging Face ELECTRA discriminator of this shape, or its generator's."""
    g = cfg.gen_hidden
    size = ((cfg.hidden, cfg.heads, cfg.ffn) if tower == "discriminator"
            else (g, max(1, g // 64), 4 * g))
    return {"architectures": [architecture], "model_type": "electra", "vocab_size": cfg.vocab_size,
            "embedding_size": cfg.embed, "hidden_size": size[0], "num_hidden_layers": cfg.layers,
            "num_attention_heads": size[1], "intermediate_size": size[2],
            "hidden_act": cfg.activation, "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.dropout, "max_position_embeddings": cfg.max_len,
            "type_vocab_size": cfg.type_vocab, "layer_norm_eps": cfg.eps,
            "initializer_range": cfg.init_std, "pad_token_id": 0}


def hf_tokenizer(model):
    """The export's tokenizer: a copy of the model's that adds [CLS] A [SEP] B [SEP] (segments
    0 ... 0 1 ... 1) as encode_inputs does, so that transformers' tokenizers and pipelines encode
    as we do; and the entries of its tokenizer_config.json."""
    from tokenizers import Tokenizer, processors

    tok, cls, sep = Tokenizer.from_str(model.tokenizer.to_str()), SPECIALS["cls"], SPECIALS["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)])
    return tok, {**{f"{role}_token": token for role, token in SPECIALS.items()},
                 "model_max_length": model.cfg.max_len,
                 "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}


def export(model, folder):
    """The discriminator, the model ELECTRA keeps (§2), as a Hugging Face ElectraForPreTraining
    folder in `folder`/discriminator, and the generator as an ElectraForMaskedLM in
    `folder`/generator."""
    tokenizer = hf_tokenizer(model)
    for tower, architecture, heads in (("discriminator", "ElectraForPreTraining", ("rtd.",)),
                                       ("generator", "ElectraForMaskedLM", ("mlm.", "head.bias"))):
        kept = {k: v for k, v in model.state_dict().items()
                if k.startswith(("embeddings.", f"{tower}.", *heads))}
        sd = unrename(kept, tower_names(tower))
        sd = {k if k.startswith(("discriminator_", "generator_")) else "electra." + k: v
              for k, v in sd.items()}
        write_pretrained(Path(folder) / tower, sd, hf_config(model.cfg, architecture, tower),
                         *tokenizer)


def export_classifier(clf, folder, labels, regression):
    """A fine-tuned Classifier as a Hugging Face ElectraForSequenceClassification folder."""
    encoder = {k.removeprefix("model."): v for k, v in clf.state_dict().items()
               if k.startswith(("model.embeddings.", "model.discriminator."))}
    sd = {"electra." + k: v for k, v in unrename(encoder, tower_names("discriminator")).items()}
    sd.update(unrename({k: v for k, v in clf.state_dict().items() if not k.startswith("model.")},
                       HF_HEAD))
    config = {**hf_config(clf.model.cfg, "ElectraForSequenceClassification"),
              **label_config(labels, regression)}
    write_pretrained(folder, sd, config, *hf_tokenizer(clf.model))


# ===== shared plumbing: identical in every script (tests/test_shared_code.py) =====

import argparse, ast, atexit, collections, concurrent.futures, contextlib, ctypes, dataclasses, glob
import hashlib, itertools, json, math, os, re, shutil, sys, sysconfig, tempfile, time
from pathlib import Path

import filelock
import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer


class UserError(Exception):
    """Bad input: one line on stderr and exit status 2, never a traceback."""


def document(text):
    """A text's sentences: each line cut after every . ! or ? that white space follows."""
    return [s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]


def default_corpus_files():
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(f"{stdlib}/*.py") + glob.glob(f"{stdlib}/*/*.py"))
    skip = ("site-packages", "idlelib", "test")  # no tests, no IDLE
    return [f for f in files if not any(w in f[len(stdlib):] for w in skip)]


def default_corpus():
    """The prose every Python ships, in a fixed order: a document per documentation topic and per
    module's docstrings, prose paragraphs only (no indented code, no >>> sessions)."""
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    for f in default_corpus_files():
        try:
            nodes = ast.walk(ast.parse(Path(f).read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docstrings = (ast.get_docstring(n) for n in nodes if isinstance(n, kinds))
        texts.append("\n\n".join(d for d in docstrings if d))
    paragraphs = ([" ".join(s.strip() for s in p.splitlines() if re.search(r"\w", s))
                   for p in re.split(r"\n\s*\n", text)
                   if p.strip() and not p.startswith((" ", ">>>"))] for text in texts)
    return [doc for doc in (document("\n".join(p)) for p in paragraphs) if doc]


@dataclasses.dataclass
class Corpus:
    """Documents streamed anew each time: read() yields (document, bytes read so far). `key` names
    the content for the caches without reading it; `size` is in bytes (None: unknown)."""
    spec: str
    key: list
    size: int
    read: object

    def __iter__(self):
        return (doc for doc, _ in self.read())


def read_corpus(spec):
    """--data: None (the default corpus); text files, folders or globs, comma-separated, a blank
    line between documents; .jsonl, a `text` a line; or hf:NAME[:CONFIG] through `datasets`."""
    if spec is None:
        stats, docs = [(f, os.stat(f)) for f in default_corpus_files()], []  # the key reads none

        def read_default():
            docs[:] = docs or default_corpus()  # parsed once
            return zip(docs, itertools.accumulate(sum(len(s) + 1 for s in d) for d in docs))

        key = [sys.version, [(f, s.st_size, s.st_mtime_ns) for f, s in stats]]
        return Corpus("the docs shipped with Python", key, None, read_default)
    if spec.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            why = "needs the `datasets` library: pip install datasets"
            raise UserError(f"--data hf:... {why}") from None
        name, _, config = spec[3:].partition(":")
        try:
            rows = datasets.load_dataset(name, config or None, split="train")
        except Exception as e:  # the hub, the network, a wrong name: its first line says which
            raise UserError(f"cannot load dataset {spec!r}: {e}".splitlines()[0]) from None

        def read_rows():
            done = 0
            for row in rows:
                done += len(row["text"])
                if doc := document(row["text"]):
                    yield doc, done

        size = getattr(getattr(rows, "data", None), "nbytes", None)  # an Arrow table's
        return Corpus(spec, [spec, getattr(rows, "_fingerprint", None)], size, read_rows)
    files = []
    for part in filter(None, map(str.strip, spec.split(","))):  # "a.txt," is a.txt
        found = sorted(glob.glob(part, recursive=True)) if glob.has_magic(part) else [part]
        if not found or not Path(found[0]).exists():
            raise UserError(f"--data: no such file, folder or glob: {part}")
        for p in map(Path, found):
            files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    stats = [f.stat() for f in files]

    def read_files():  # a .jsonl file holds a document a line; a text file, a blank line ends one
        for f, done in zip(files, itertools.accumulate([0] + [s.st_size for s in stats])):
            try:
                with open(f, "rb") as raw:
                    lines = enumerate((line.decode("utf-8") for line in raw), 1)
                    jsonl = f.suffix == ".jsonl"
                    for key, group in itertools.groupby(lines, lambda x: bool(x[1].strip()) and (
                            x[0] if jsonl else True)):
                        text = "".join(line for _, line in group)
                        try:
                            text = str(json.loads(text)["text"]) if key and jsonl else text
                        except (ValueError, KeyError, TypeError):
                            raise UserError(f"--data: {f}, line {key}: not a JSON object with a "
                                            "'text' field") from None
                        if key and (doc := document(text)):
                            yield doc, done + raw.tell()
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"--data: cannot read {f} as UTF-8 text: {e}") from None

    key = [(str(f.resolve()), s.st_size, s.st_mtime_ns) for f, s in zip(files, stats)]
    return Corpus(spec, key, sum(s.st_size for s in stats), read_files)


def progress(items, phase, total=None, unit="MB", scale=1e6):
    """The items of (item, amount done) pairs; a line at most every 10 s says how far `phase` is."""
    start = last = time.time()
    for item, done in items:
        if (now := time.time()) - last >= 10:
            last, rate = now, done / (now - start)
            of = f" of {total / scale:,.0f} {unit} ({done / total:.0%})" if total else ""
            eta = f", eta {max(0, total - done) / max(rate, 1e-9):.0f}s" if total else ""
            print(f"{phase}: {done / scale:,.0f} {unit}{of}, {rate / scale:,.1f} {unit}/s{eta}")
        yield item
    if last > start:
        print(f"{phase}: done in {time.time() - start:.0f}s")


def in_blocks(n, phase, passes=1, size=4096):
    """The first index of each block of `size` of n documents, `passes` times over, with progress."""
    starts = ((block, p * n + block) for p in range(passes) for block in range(0, n, size))
    return progress(starts, phase, passes * n, "documents", 1)


VAL_EVERY, VAL_BYTES = 20, 10_000_000  # validation: every 20th document, until it holds 10 MB


def split_documents(corpus, phase="reading the corpus"):
    """(split, document) in order: every 20th document (of fewer, the last) is held out until
    validation holds VAL_BYTES of text."""
    pending, held, n = None, 0, 0
    for n, doc in enumerate(progress(corpus.read(), phase, corpus.size), 1):
        if pending:
            yield pending  # one behind, so that the last document of a short corpus can be held out
        val = n % VAL_EVERY == 0 and held < VAL_BYTES
        held += sum(len(s) + 1 for s in doc) if val else 0
        pending = ("val" if val else "train", doc)
    if n < 2:
        raise UserError("the corpus is a single document; separate documents with a blank line" if n
                        else f"--data: no text found in {corpus.spec}")
    yield ("val", pending[1]) if n < VAL_EVERY else pending


def on_rank_0(path):
    """Rank 0 makes what is missing; another rank stops, as what it made would not be rank 0's."""
    if int(os.environ.get("RANK", 0)) > 0:
        raise UserError(f"{path} is missing on this machine: share --out between machines, or copy "
                        "a folder prepared with --prepare-only")
    return True


@contextlib.contextmanager
def written(path):
    """A file written to a temporary name, renamed when complete: a write that fails (a full disk)
    is one error line, and what `path` held is kept."""
    tmp = Path(f"{path}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as e:  # torch, safetensors and tokenizers each raise their own kind
        tmp.unlink(missing_ok=True)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot write {path} ({why}); what was there is kept") from None


def cached(path, key, blocks, what):
    """Arrays made once from `blocks` ({name: rows} each, appended), memory-mapped by later runs.
    Made in a temporary folder, renamed to `path`-KEY when complete; arrays.json records each file's
    dtype and shape, and a file of another size (cut short on disk) has it all made again."""
    folder = Path(f"{path}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}")
    try:
        shapes = json.loads((folder / "arrays.json").read_text())
        intact = all((folder / n).stat().st_size == np.dtype(d).itemsize * math.prod(s)
                     for n, (d, s) in shapes.items())
    except (OSError, ValueError):
        intact = False
    if not intact and on_rank_0(folder):
        damaged = " (its files were damaged)" if folder.exists() else ""
        print(f"{what} into {folder}{damaged}", flush=True)
        tmp, files, shapes = folder.with_name(folder.name + ".tmp"), {}, {}
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with contextlib.ExitStack() as stack:
            for name, rows in (item for block in blocks for item in block.items()):
                if name not in files:
                    files[name] = stack.enter_context(open(tmp / name, "wb"))
                    shapes[name] = [np.asarray(rows).dtype.str, [0, *np.shape(rows)[1:]]]
                files[name].write(np.ascontiguousarray(rows, dtype=shapes[name][0]).tobytes())
                shapes[name][1][0] += len(rows)
        (tmp / "arrays.json").write_text(json.dumps(shapes))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return {n: np.memmap(folder / n, d, "r", shape=tuple(s)) if math.prod(s) else np.zeros(s, d)
            for n, (d, s) in shapes.items()} | {"folder": folder}


def cache_tokens(corpus, tokenizer, folder, eod_id=None):
    """Each split's `tokens` (eod_id after each document, if given), `sentences` ((start, end)
    token offsets) and `documents` ((first, last + 1) sentences). A document is encoded as one text,
    so its ids are what the tokenizer gives it anywhere; a token belongs to the sentence its end
    falls in. Memory holds a batch and the held-out documents, which lose the sentences training
    has (documents may contain one another), so validation never scores trained text."""
    dtype = np.uint16 if tokenizer.get_vocab_size() < 2**16 else np.uint32
    count = {"train": (0, 0), "val": (0, 0)}  # tokens and sentences so far

    def encode(split, docs):
        (n, s), ids, sentences = count[split], [], []
        texts = [" ".join(d) for d in docs]
        for doc, enc in zip(docs, tokenizer.encode_batch(texts, add_special_tokens=False)):
            starts = np.cumsum([0] + [len(t) + 1 for t in doc[:-1]])  # sentences' first characters
            ends = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
            owner = np.searchsorted(starts, ends, "right") - 1  # the sentence each token ends in
            owner = np.maximum.accumulate(np.clip(owner, 0, None))
            edges = n + np.searchsorted(owner, np.arange(len(doc) + 1))  # (sentences + 1,)
            ids += enc.ids + [eod_id] * (eod_id is not None)
            sentences.append(np.stack([edges[:-1], edges[1:]], 1))
            n += len(enc.ids) + (eod_id is not None)
        ends = s + np.cumsum([len(d) for d in docs])
        count[split] = n, int(ends[-1])
        return {f"{split}.tokens": np.array(ids, dtype),
                f"{split}.sentences": np.concatenate(sentences),
                f"{split}.documents": np.stack([np.concatenate([[s], ends[:-1]]), ends], 1)}

    def blocks():  # made only when the cache is: a warm start opens no file here
        with tempfile.TemporaryFile(dir=folder) as hashes:  # every training sentence's hash
            batch, chars, val = [], 0, []
            docs = itertools.chain(split_documents(corpus, "tokenizing"), [("end", None)])
            for split, doc in docs:  # ("end", None): the last training batch is written
                if split == "val":
                    val.append(doc)  # held until training's sentences are known: VAL_BYTES at most
                    continue
                if doc is not None:
                    batch.append(doc)
                    chars += sum(map(len, doc))
                if batch and (doc is None or len(batch) == 256 or chars > 1 << 22):
                    hashes.write(np.array([hash(t) for d in batch for t in d], np.int64).tobytes())
                    yield encode("train", batch)
                    batch, chars = [], 0
            held, seen = np.array(sorted({hash(t) for d in val for t in d}), np.int64), set()
            hashes.seek(0)
            while len(block := np.frombuffer(hashes.read(1 << 25), np.int64)):
                seen.update(block[np.isin(block, held)].tolist())
        val = [d for d in ([t for t in d if hash(t) not in seen] for d in val) if d]
        if not val:
            raise UserError("no validation text: every held-out sentence also occurs in training")
        for start in range(0, len(val), 256):
            yield encode("val", val[start:start + 256])

    arrays = cached(Path(folder) / "tokens", [corpus.key, tokenizer.to_str(), eod_id], blocks(),
                    "tokenizing the corpus")
    return {split: {k: arrays[f"{split}.{k}"] for k in ("tokens", "sentences", "documents")}
            | {"folder": arrays["folder"]} for split in ("train", "val")}


def get_tokenizer(out, corpus, cfg):
    """The run's tokenizer.json, trained by its first run on the training documents (of a corpus
    over 100 MB every k-th: a vocabulary is learnt long before that)."""
    path = Path(out) / "tokenizer.json"
    if not path.exists() and on_rank_0(path):
        print(f"training the tokenizer ({cfg.vocab_size:,} tokens) on {corpus.spec}", flush=True)
        every = max(1, math.ceil((corpus.size or 0) / 100_000_000))
        docs = (doc for i, (split, doc) in enumerate(split_documents(corpus, "reading"))
                if split == "train" and i % every == 0)
        tokenizer = train_tokenizer(docs, cfg)  # an error in the corpus stops here, before a save
        with written(path) as tmp:
            tokenizer.save(str(tmp))
    return load_tokenizer(out)  # read back: a unigram model's scores print differently after a save


def uniform(seed, keys, n, stream):
    """(len(keys), n) numbers in [0, 1), a hash (splitmix64) of (seed, key, column, stream): a key
    draws the same numbers however the batch around it is made up."""
    x = (np.array([seed], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         + np.asarray(keys, dtype=np.uint64)[:, None] * np.uint64(0xD1B54A32D192ED03)
         + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(0x8CB92BA72F3D8DD7)
         + np.uint64(stream) + np.uint64(0x9E3779B97F4A7C15))
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
    return ((x ^ (x >> np.uint64(31))) >> np.uint64(11)) / 2.0 ** 53  # (B, n)


class HFConfig(dict):
    def __missing__(self, key):  # a key that config.json lacks: one clear error, not a KeyError
        raise UserError(f"--from-pretrained {self.path}: config.json has no {key!r}")


def read_pretrained(name, model_type):
    """(config, state dict) of a Hugging Face-format folder, or of a hub model (`bert-base-uncased`)
    whose files this script reads are downloaded once; one clear error if it is unreadable."""
    path = Path(name)
    if not path.exists() and re.fullmatch(r"\w[\w.-]*(/\w[\w.-]*)?", str(name)):
        import huggingface_hub as hub

        try:
            files = ["config.json", "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"]
            path = Path(hub.snapshot_download(name, allow_patterns=[*files, "model.safetensors"]))
            if not (path / "model.safetensors").exists():  # PyTorch weights only without it
                path = Path(hub.snapshot_download(name, allow_patterns=["pytorch_model.bin"]))
        except Exception as e:  # no network (and not in the cache), no such model, a private one
            why = "the hub cannot be reached, and it is not in the cache" if isinstance(
                e, FileNotFoundError) else (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--from-pretrained {name}: no such folder, and not from the hub "
                            f"({why})") from None
    try:
        hf = HFConfig(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as e:  # TypeError: JSON that is not an object
        raise UserError(f"--from-pretrained {path}: no readable config.json "
                        f"({type(e).__name__})") from None
    hf.path = path  # the folder, where the tokenizer's files are
    if hf.get("model_type") != model_type:
        raise UserError(f"--from-pretrained {path}: holds a {hf.get('model_type')!r} model, this "
                        f"script loads {model_type!r}")
    try:
        if (weights := path / "model.safetensors").exists():
            from safetensors.torch import load_file
            sd = load_file(str(weights))
        else:
            sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"--from-pretrained {path}: no readable model.safetensors or "
                        f"pytorch_model.bin ({type(e).__name__})") from None
    # older TensorFlow ports name LayerNorm's parameters gamma and beta
    return hf, {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias"): v for k, v in sd.items()}


def load_weights(model, sd, path, optional=()):
    """Copy `sd` into `model`; missing tensors under the `optional` prefixes keep their
    initialisation (a warning says so), any other mismatch is an error."""
    own = model.state_dict()
    missing = [k for k, _ in itertools.chain(model.named_parameters(), model.named_buffers())
               if k not in sd]  # a tied tensor is named once
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if unexpected or wrong or any(not k.startswith(optional) for k in missing):
        raise UserError(f"--from-pretrained {path}: weights do not match the config (missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(sd, strict=False)
    if missing:
        parts = sorted({".".join(k.rsplit(".", 1)[0].split(".")[:2]) for k in missing})
        print(f"warning: {path} has no {', '.join(parts)}: freshly initialised", file=sys.stderr)


def rename(sd, names, skip=()):
    """A Hugging Face state dict under our names: the parts of each name replaced by `names`
    [(theirs, ours), ...] in order, names starting with `skip` left out, and query, key and value
    (renamed attn.q, attn.k, attn.v) joined into common.Block's one attn.qkv."""
    ours = {}
    for k, v in sd.items():
        if not k.startswith(skip):
            for theirs, new in names:
                k = k.replace(theirs, new)
            ours[k] = v
    for k in [k for k in ours if ".attn.q." in k]:
        parts = [k.replace(".attn.q.", f".attn.{n}.") for n in "qkv"]
        if all(part in ours for part in parts):
            ours[k.replace(".attn.q.", ".attn.qkv.")] = torch.cat([ours.pop(p) for p in parts])
    return ours


def unrename(sd, names):
    """`rename` undone, attn.qkv split into q, k and v; where two of their names map to one of ours
    (a tied bias), the later row of `names` names it."""
    inverse = list(dict((new, old) for old, new in names).items())[::-1]
    theirs = {}
    for k, v in sd.items():
        for n, t in zip("qkv", v.chunk(3)) if ".attn.qkv." in k else [(None, v)]:
            name = k.replace(".attn.qkv.", f".attn.{n}.") if n else k
            for new, old in inverse:
                name = name.replace(new, old)
            theirs[name] = t.detach().contiguous().cpu()
    return theirs


def write_pretrained(folder, sd, config, tokenizer, tokenizer_config):
    """A Hugging Face-format folder: model.safetensors and config.json, and tokenizer.json with the
    tokenizer_config.json that AutoTokenizer reads it by (the specials the tokenizer has)."""
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    os.umask(umask := os.umask(0o22))  # reads the umask, and sets it back
    with written(Path(folder) / "model.safetensors") as tmp:
        save_file(sd, str(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes it for its owner only
    with written(Path(folder) / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    with written(Path(folder) / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    tokenizer_config = {k: v for k, v in tokenizer_config.items()
                        if not k.endswith("_token") or tokenizer.token_to_id(v) is not None}
    with written(Path(folder) / "tokenizer_config.json") as tmp:  # tokenizer.json as it is
        tmp.write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                   "clean_up_tokenization_spaces": False, **tokenizer_config}))


def task_loss(logits, labels):
    """A task's loss: cross-entropy over its classes, squared error for a regression (floats)."""
    if labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def label_config(labels, regression):
    """config.json's entries of a Hugging Face sequence classifier: labels, or one regression."""
    names = ["LABEL_0"] if regression else [str(label) for label in labels]
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "regression" if regression else "single_label_classification"}


def setup_runtime(args):
    """Device (CUDA, then MPS, then CPU), autocast dtype, and DDP when launched by torchrun."""
    name = args.device
    if name == "auto":
        mps = torch.backends.mps.is_available()
        name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: no Apple GPU is available")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))  # a launcher may show each rank only its own GPU
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}" if name == "cuda" else name)
    if sys.platform == "linux":  # glibc returns a large freed tensor to the OS and faults it back
        for option in (-3, -1):  # in, zeroed, the next step: M_MMAP_ and M_TRIM_THRESHOLD to 1 GB
            ctypes.CDLL(None).mallopt(option, 1 << 30)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # fp32 left
    dtype = args.dtype
    if dtype == "auto":  # bf16 where native: a CPU with AVX-512 BF16 (and AMX) and ATen's AVX-512 kernels
        bf16 = {"cuda": torch.cuda.is_bf16_supported, "mps": lambda: True, "cpu": lambda: "AVX512" in
                torch.backends.cpu.get_cpu_capability() and torch.cpu._is_avx512_bf16_supported()}
        dtype = "bf16" if bf16[device.type]() else "fp32" if device.type == "cpu" else "fp16"
    if ddp := "RANK" in os.environ:  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(torch.distributed.destroy_process_group)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    return argparse.Namespace(device=device, dtype=dtype, ddp=ddp, rank=rank, world=world,
                              master=rank == 0, amp=torch.autocast(device.type, amp, bool(amp)))


def get_lr(step, cfg):
    """Linear warmup to lr (step 0 already moves the weights), then cosine or linear decay to 0."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * done)) if cfg.schedule == "cosine" else 1 - done)


@torch.no_grad()
def evaluate(model, data, seed, cfg, rt):
    """Mean loss and metrics over the first eval_examples validation examples, without dropout."""
    model.eval()
    totals = {}
    # an objective that samples (ELECTRA) draws the same each time; training's stream is untouched
    with torch.random.fork_rng(devices=[rt.device.index] if rt.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, cfg.eval_examples, cfg.batch_size):
            ids = np.arange(start, min(start + cfg.batch_size, cfg.eval_examples))
            batch = {k: v.to(rt.device) for k, v in get_batch(data["val"], ids, seed, cfg).items()}
            with rt.amp:
                loss, metrics = compute_loss(model, batch, cfg)
            for k, v in {"loss": loss, **metrics}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(ids) / cfg.eval_examples
    model.train()
    return {f"val_{k}": v for k, v in totals.items()}


def save_checkpoint(path, state):
    with written(path) as tmp:  # a kill or a full disk never leaves half a checkpoint
        torch.save(state, tmp)


def load_checkpoint(path):
    """A checkpoint of this script: its state, with the tokenizer it was trained with."""
    if not Path(path).exists():
        raise UserError(f"no checkpoint at {path}: train one with --train, or pass --out or "
                        "--from-pretrained")
    try:  # weights_only: a checkpoint is data, never code to run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = f"{type(e).__name__}: {str(e).strip()[:80]!r}"
        raise UserError(f"cannot read checkpoint {path} ({why}); it is damaged or not a "
                        "checkpoint") from None
    if not isinstance(state, dict) or state.get("script") != (name := Path(__file__).stem):
        raise UserError(f"{path} is not {'an' if name[0] in 'aeiou' else 'a'} {name}.py checkpoint")
    try:
        return state | {"tokenizer": Tokenizer.from_str(state["tokenizer"])}
    except Exception:  # before checkpoints carried their tokenizer, they held its hash
        raise UserError(f"{path} holds no tokenizer (an older checkpoint): train again") from None


def model_from_checkpoint(path):
    state = load_checkpoint(path)
    model = Model(Config(**state["config"]))
    model.load_state_dict(state["model"])
    model.tokenizer = state["tokenizer"]
    return model


def lock_folder(out):
    """One run per folder: an OS lock on out/lock, freed when the run ends or its process dies."""
    try:
        return filelock.FileLock(Path(out) / "lock", timeout=0).acquire()
    except filelock.Timeout:
        raise UserError(f"--out {out} is in use by another run; wait for it or choose another "
                        "--out") from None


def numel(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def peak_flops(device):
    """Dense bf16 peak of known GPUs, for MFU; None elsewhere."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((f for gpu, f in (("A100", 312e12), ("H100", 989e12), ("H200", 989e12))
                 if gpu in name), None)


def micro_batch_ids(step, seen, cfg, rank, world):
    """Each micro-batch's example ids in this process from `step` on: micro-batch m of the step
    after `seen` examples holds seen + (m·W + rank)·B + 0..B-1, one global batch for any W and A."""
    B, A = cfg.batch_size, cfg.grad_accum
    for _ in range(step, cfg.steps):
        for micro in range(A):
            yield seen + (micro * world + rank) * B + np.arange(B)
        seen += A * world * B


def training_batches(data, ids, seed, cfg, ahead, device):
    """The batches of `ids` in order; `ahead` of them built by a thread while the loop trains (0:
    each when asked), on CUDA in page-locked memory, for asynchronous copies."""
    def build(i):
        batch = get_batch(data, i, seed, cfg)
        return {k: v.pin_memory() for k, v in batch.items()} if device.type == "cuda" else batch

    if not ahead:
        yield from map(build, ids)
        return
    ids = iter(ids)  # each islice below takes the next ones
    # a new thread's device is GPU 0, and pinning would open a context there
    start = (torch.cuda.set_device, (device,)) if device.type == "cuda" else (None, ())
    pool = concurrent.futures.ThreadPoolExecutor(1, "prefetch", *start)
    try:
        made = collections.deque(pool.submit(build, i) for i in itertools.islice(ids, ahead))
        while made:
            made.extend(pool.submit(build, i) for i in itertools.islice(ids, 1))
            yield made.popleft().result()  # an error met while building is raised here
    finally:  # the loop has stopped: what is not built yet never will be
        pool.shutdown(wait=False, cancel_futures=True)


def train(args):
    """Pretrain from scratch (or from --from-pretrained weights), or --resume the run in --out."""
    # Settings: the preset, or a resumed run's own config; numbers on the command line win.
    if args.size not in PRESETS:
        raise UserError(f"--size {args.size!r} is unknown; choose one of {', '.join(PRESETS)}")
    out, ckpt = Path(args.out), Path(args.out) / "ckpt.pt"
    state = load_checkpoint(ckpt) if args.resume else None
    if state is None and ckpt.exists() and not args.prepare_only:  # never overwrite a run
        raise UserError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    given = {k: v for k in ("steps", "batch_size", "grad_accum", "lr", "log_interval", "eval_examples")
             if (v := getattr(args, k))}
    cfg = dataclasses.replace(Config(**state["config"]) if state else PRESETS[args.size], **given)
    pretrained = None if state or not args.from_pretrained else Model.from_pretrained(
        args.from_pretrained, cfg)
    cfg = cfg if pretrained is None else pretrained.cfg  # its architecture, our training settings
    rt = setup_runtime(args)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot make the run folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out {out}: the run folder is not writable")
    with lock_folder(out) if rt.master else contextlib.nullcontext():
        # Data: the tokenizer (the checkpoint's; else the folder's, the pretrained model's or a new
        # one) and the paper's examples, cached in --out by rank 0 while the other ranks wait.
        corpus, t0 = read_corpus(args.data), time.time()  # its files are checked, then streamed
        if rt.ddp and not rt.master:
            torch.distributed.barrier()
        if getattr(pretrained, "tokenizer", None) and not (out / "tokenizer.json").exists():
            pretrained.tokenizer.save(str(out / "tokenizer.json"))
        tokenizer = state["tokenizer"] if state else get_tokenizer(out, corpus, cfg)
        t_tokenizer = time.time() - t0
        if tokenizer.get_vocab_size() > cfg.vocab_size or cfg.seq_len > cfg.max_len:
            raise UserError(f"the model has {cfg.vocab_size} embeddings and {cfg.max_len} "
                            f"positions, but the tokenizer has {tokenizer.get_vocab_size()} tokens "
                            f"and a sequence is {cfg.seq_len} long")
        data = load_data(corpus, tokenizer, out, cfg)
        t_data = time.time() - t0 - t_tokenizer
        if rt.ddp and rt.master:
            torch.distributed.barrier()
        if args.prepare_only:
            print(f"prepared {out}: the tokenizer and {len(data['train']['tokens']):,} training "
                  "tokens, cached")
            return None

        # Model, optimiser and loss scaler: new, or as the checkpoint left them.
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        raw = Model(cfg) if pretrained is None else pretrained  # no wrapper's prefixes in its state
        raw.tokenizer = tokenizer
        step, seen = (state["step"], state["seen"]) if state else (0, 0)
        if state:
            raw.load_state_dict(state["model"])
        optimizer = configure_optimizer(raw.to(rt.device), cfg, rt.device)
        scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == "fp16")
        torch.manual_seed(args.seed + rt.rank)  # dropout differs across ranks
        cuda = rt.device.type == "cuda"
        if state:
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            if "cuda_rng" in state and cuda:
                torch.cuda.set_rng_state(state["cuda_rng"])
        model = torch.compile(raw) if args.compile else raw
        if rt.ddp:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[rt.device.index] if cuda else None)

        # Logging: metrics.jsonl (a resumed run drops the lines after its checkpoint), and a line
        # per log interval.
        log_path = out / "metrics.jsonl"
        fmt = {"step": "{:>6}", "lr": "lr {:.2e}", "tokens_per_s": "{:,} tok/s",
               "mfu": "mfu {:.1%}", "eta_s": "eta {:.0f}s"}
        if rt.master:
            lines = log_path.read_text().splitlines() if state and log_path.exists() else []
            log_path.write_text("".join(f"{r}\n" for r in lines if json.loads(r)["step"] <= step))
            print(f"{Path(__file__).stem}.py: {raw.num_params():,} parameters, "
                  f"{len(data['train']['tokens']):,} training tokens, {rt.device} {rt.dtype}, "
                  f"{rt.world} process(es), step {step} of {cfg.steps}; prepared in "
                  f"{t_tokenizer:.1f}s (tokenizer) + {t_data:.1f}s (data)")

        def log(record):
            if rt.master:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(" | ".join(fmt.get(k, k + " {:.4f}").format(v) for k, v in record.items()
                                 if k not in ("tokens", "data_frac")))

        # The loop: a step is A micro-batches on each of W processes, B sequences each; on a GPU a
        # thread builds the batches ahead, and the next one is sent while the GPU computes.
        B, A, W = cfg.batch_size, cfg.grad_accum, rt.world
        ahead = args.prefetch if args.prefetch is not None else 4 if cuda else 0
        batches = training_batches(data["train"], micro_batch_ids(step, seen, cfg, rt.rank, W),
                                   args.seed, cfg, ahead, rt.device)

        def next_batch():
            batch = next(batches, None)  # None after the run's last micro-batch
            return batch and {k: v.to(rt.device, non_blocking=cuda) for k, v in batch.items()}

        peak, fpt = peak_flops(rt.device), flops_per_token(raw, cfg)
        if step == 0:  # the loss before training; validation draws with a seed of its own
            log({"step": 0, "tokens": 0, **evaluate(raw, data, args.seed + 1, cfg, rt)})
        batch, sums, data_time = next_batch(), {}, 0.0
        t_log, step_log, t_start, step_start = time.time(), step, time.time(), step
        while step < cfg.steps:
            lr = get_lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(A):  # gradients add up; DDP all-reduces once, at the last one
                with contextlib.nullcontext() if micro == A - 1 or not rt.ddp else model.no_sync():
                    with rt.amp:
                        loss, metrics = compute_loss(model, batch, cfg)
                    scaler.scale(loss / A).backward()  # the mean over micro-batches: a batch of A·B
                for k, v in {"loss": loss, **metrics}.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float() / A
                t0 = time.time()
                batch = next_batch()  # the host's share of the step
                data_time += time.time() - t0
            scaler.unscale_(optimizer)  # clip the true gradient, not the fp16-scaled one
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.clip)
            scaler.step(optimizer)  # with fp16, skipped when a gradient overflowed
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step, seen = step + 1, seen + A * W * B

            # Log the means since the last line, evaluate, stop on a broken loss, save.
            record = {"step": step, "tokens": seen * cfg.seq_len}  # positions, padding included
            if step % cfg.log_interval == 0 or step == cfg.steps:
                values = torch.stack(list(sums.values())) / (step - step_log)  # the one host sync
                if rt.ddp:
                    torch.distributed.all_reduce(values)
                    values /= W
                now = time.time()
                record.update({k: float(v) for k, v in zip(sums, values)}, lr=lr,
                              tokens_per_s=round((step - step_log) * B * A * W * cfg.seq_len
                                                 / (now - t_log)))
                if peak:
                    record["mfu"] = record["tokens_per_s"] * fpt / (peak * W)
                record.update(data_frac=round(data_time / (now - t_log), 4),
                              eta_s=(now - t_start) / (step - step_start) * (cfg.steps - step))
                sums, data_time, t_log, step_log = {}, 0.0, now, step
            if saving := step % cfg.eval_interval == 0 or step == cfg.steps or step in args.keep:
                record.update(evaluate(raw, data, args.seed + 1, cfg, rt))
            if bad := [k for k in ("loss", "val_loss") if not math.isfinite(record.get(k, 0))]:
                raise UserError(f"{bad[0]} became {record[bad[0]]} at step {step}; the last "
                                "checkpoint was kept. Lower --lr, or train in --dtype bf16 or fp32 "
                                "instead of fp16")
            if len(record) > 2:
                log(record)
            if rt.master and saving:
                snapshot = {"script": Path(__file__).stem, "config": dataclasses.asdict(cfg),
                            "step": step, "seen": seen, "model": raw.state_dict(),
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                            "rng": torch.get_rng_state(), "tokenizer": tokenizer.to_str()}
                if cuda:
                    snapshot["cuda_rng"] = torch.cuda.get_rng_state()
                if step in args.keep:  # a copy later saves leave alone; first, never skipped
                    save_checkpoint(out / f"ckpt-{step}.pt", snapshot)
                save_checkpoint(ckpt, snapshot)
        if rt.master:
            print(f"trained to step {step} in {time.time() - t_start:.0f}s; checkpoint: {ckpt}; "
                  f"the curves: python plot.py {out}")
        return raw.eval()


def number(flag, kind, zero=False):
    """An argparse type: a finite `kind` above 0 (or from 0 on), else one error line."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            raise UserError(f"{flag} must be {'0 or more' if zero else 'positive'}, got {text}")
        return value
    return parse


def kept_steps(text):
    """--keep: positive step numbers, comma-separated."""
    try:
        steps = {int(s) for s in text.split(",") if s.strip()}
    except ValueError:
        raise UserError(f"--keep takes step numbers separated by commas, got {text!r}") from None
    if min(steps, default=1) <= 0:
        raise UserError(f"--keep takes positive step numbers, got {text!r}")
    return steps


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add, preset = p.add_argument, "(default: the preset's)"
    add("--train", action="store_true", help="pretrain, then run the demo")
    add("--size", help=f"preset: {', '.join(PRESETS)} (default: small on CUDA, else tiny)")
    add("--data", help="text files, folders or globs, comma-separated; .jsonl with a 'text' "
        "field; or hf:NAME[:CONFIG] (default: the docs shipped with Python)")
    add("--out", default=f"runs/{Path(__file__).stem}",
        help="run folder: checkpoint, data, logs (default: %(default)s)")
    add("--steps", type=number("--steps", int), help=f"optimiser steps {preset}")
    add("--batch-size", type=number("--batch-size", int), help=f"sequences a micro-batch {preset}")
    add("--grad-accum", type=number("--grad-accum", int), help=f"micro-batches per step {preset}")
    add("--lr", type=number("--lr", float), help=f"peak learning rate {preset}")
    add("--log-interval", type=number("--log-interval", int), help=f"steps a log line {preset}")
    add("--eval-examples", type=number("--eval-examples", int), help=f"sequences an evaluation {preset}")
    add("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
        help="auto (the default): CUDA, then MPS, then CPU")
    add("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype; auto (the default): bf16 where the device has it natively (a CPU: AVX-512 BF16, "
        "with ATen's AVX-512 kernels), else fp16 with loss scaling on a GPU, fp32 on a CPU")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--prefetch", type=number("--prefetch", int, zero=True),
        help="batches built ahead of the loop by a thread (default: 4 on CUDA, else 0)")
    add("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    add("--seed", type=number("--seed", int, zero=True), default=0,
        help="seed of the weights, the data and sampling (default: 0)")
    add("--from-pretrained", metavar="DIR", help="a Hugging Face-format checkpoint folder")
    add("--keep", type=kept_steps, default="", metavar="STEPS",
        help="also keep these steps' checkpoints (comma-separated) as ckpt-STEP.pt in --out")
    add("--prepare-only", action="store_true",
        help="train the tokenizer and cache the data in --out, then stop (before a run of many "
        "processes)")
    add("--export", metavar="DIR", help="write the model to DIR in the Hugging Face layout")
    demo_arguments(p)  # the paper's demo: --sample, --fill or --detect, stored as args.demo
    return p


def run(main, argv):
    """Run `main`; bad input, or a read or write that fails, ends in one line and exit status 2."""
    try:
        return main(argv)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # checkpoints are written whole, so the last one is intact
        ckpt = Path(build_parser().parse_known_args(argv)[0].out) / "ckpt.pt"
        print(f"interrupted: the last checkpoint is {ckpt}; continue with --resume --out "
              f"{ckpt.parent}" if ckpt.exists() else "interrupted before the first checkpoint was "
              "written", file=sys.stderr)
        return 130


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if not (args.train or args.prepare_only or args.demo is not None or args.export is not None):
        p.print_help()
        return 0
    if args.size is None:
        cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
        args.size = "small" if cuda else "tiny"
    if args.train or args.prepare_only:
        model = train(args)
    elif args.from_pretrained:
        if (model := Model.from_pretrained(args.from_pretrained)).tokenizer is None:
            raise UserError(f"--from-pretrained {args.from_pretrained}: no tokenizer files")
    else:
        model = model_from_checkpoint(Path(args.out) / "ckpt.pt")
    if int(os.environ.get("RANK", 0)) == 0 and model is not None:
        if args.export is not None:
            export(model.eval(), args.export)
            print(f"the model, in the Hugging Face layout: {args.export}")
        if args.train or args.demo is not None:
            demo(model.eval(), args)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, None))
