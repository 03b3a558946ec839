"""BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding (Devlin, Chang,
Lee, Toutanova, 2018; § numbers of arXiv 1810.04805v2). What this file changes relative to gpt.py:
- Bidirectional self-attention: no causal mask; padding is masked instead (§3).
- Masked LM: 15% of tokens, 80% [MASK] / 10% random / 10% kept; one mask per instance (§3.1, A.1).
- Next sentence prediction on [CLS] A [SEP] B [SEP]: B is A's continuation half the time (§3.1).
- Segment (token type) embeddings and an embedding LayerNorm (§3, Figure 2); exact GELU (§A.2).
- Uncased WordPiece vocabulary of 30,522 tokens (§3); LayerNorm eps 1e-12 (the release).
- Adam with lr 1e-4, 10,000 warmup steps, then linear decay; batch 256 x 128 (§A.2).
"""

import dataclasses
import functools
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
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    activation: str = "gelu"  # exact erf GELU, BERT §A.2
    eps: float = 1e-12
    dropout: float = 0.1  # all layers, BERT §A.2
    init_std: float = 0.02  # initializer_range of the release's config
    # objective
    mask_prob: float = 0.15  # BERT §3.1
    # NSP, §3.1; False: MLM alone, not BERT (the ELECTRA release's BERT baseline; RoBERTa §4.2)
    next_sentence: bool = True
    max_predictions: int = 20  # masked positions per sequence at length 128 (80 at 512), release
    short_seq_prob: float = 0.1  # shorter targets, less pretrain / fine-tune mismatch, §A.2
    dupe_factor: int = 10  # each document made into instances 10 times, other masks each, release
    # training
    seq_len: int = 128  # 90% of the steps at 128, §A.2
    batch_size: int = 256  # §A.2
    grad_accum: int = 1
    steps: int = 1_000_000
    lr: float = 1e-4  # §A.2
    warmup: int = 10_000
    schedule: str = "linear"  # linear decay, BERT §A.2
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    # ours: torch's AdamW; the release's AdamWeightDecay: no bias correction (docs/gpt-and-bert.md)
    adam_eps: float = 1e-6
    clip: float = 1.0
    log_interval: int = 100
    eval_interval: int = 1000
    eval_examples: int = 1024  # the same validation examples whatever the batch size


def _sized(layers, hidden, **kw):
    """A model of L layers and H hidden: H/64 heads and a 4H feed-forward layer."""
    return Config(**{"layers": layers, "hidden": hidden, "heads": hidden // 64, "ffn": 4 * hidden,
                     **kw})


PRESETS = {
    # ours: learns visibly in a few minutes on 2 CPU cores; no dropout for such a short run; weights
    # from N(0, 0.08): at 0.02 so narrow a model's attention stays uniform for a long time
    # (docs/gpt-and-bert.md)
    "tiny": _sized(2, 128, vocab_size=4096, max_len=128, dropout=0.0, init_std=0.08, dupe_factor=5,
                   batch_size=32, steps=2000, lr=5e-4, warmup=50, log_interval=100,
                   eval_interval=500, eval_examples=320),
    # the small BERTs of "Well-Read Students Learn Better" (Turc et al., 2019)
    "mini": _sized(4, 256, steps=20_000, lr=5e-4, warmup=1000),
    "small": _sized(4, 512, steps=20_000, lr=3e-4, warmup=1000),
    "medium": _sized(8, 512, steps=20_000, lr=2e-4, warmup=1000),
    "base": Config(),  # the paper: 110,106,428 parameters with the pretraining heads
    "large": _sized(24, 1024),  # 336,226,108
}


# --- model ---


class Embeddings(nn.Module):
    """Token, position and segment embeddings, summed and normalised (BERT §3, Figure 2)."""

    def __init__(self, cfg):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        self.types = nn.Embedding(cfg.type_vocab, cfg.hidden)  # segment A / B, BERT §3
        self.ln = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids=None):  # (B, T) -> (B, T, H)
        T = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(torch.arange(T, device=input_ids.device))
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = x + self.types(types)
        return self.drop(self.ln(x))  # summed, then LayerNorm, BERT §3, Figure 2


class Model(nn.Module):
    """The bidirectional encoder and its pretraining heads: masked LM on every position, tied to the
    token embeddings, and next sentence prediction on the pooled [CLS] (§3)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.blocks = nn.ModuleList(
            common.Block(cfg.hidden, cfg.heads, cfg.ffn, cfg.activation, cfg.eps, cfg.dropout,
                         cfg.dropout)
            for _ in range(cfg.layers))
        # tanh(W h[CLS] + b) feeds the sentence-pair head, BERT §3.1
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)
        self.mlm = nn.ModuleDict({"dense": nn.Linear(cfg.hidden, cfg.hidden),  # its transform
                                  "ln": nn.LayerNorm(cfg.hidden, eps=cfg.eps)})
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        self.head.weight = self.embeddings.tokens.weight  # tied: one tensor, not a copy; own bias
        self.nsp = nn.Linear(cfg.hidden, 2)  # 0 = B follows A, 1 = B is random
        self.apply(self._init)
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
        mask = common.attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None):
        """MLM logits (B, T, V), or (B, P, V) at `positions` (B, P) only; NSP logits (B, 2)."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        pair = self.nsp(torch.tanh(self.pooler(h[:, 0])))  # (B, 2): [CLS] summarises the pair
        if positions is not None:  # project onto the vocabulary only where there is a loss
            h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        h = common.ACTIVATIONS[self.cfg.activation](self.mlm.dense(h))  # MLM head: dense, GELU,
        h = self.mlm.ln(h)  # then LayerNorm (B, P, H)
        return self.head(h), pair  # (B, P, V): scored against the token embeddings

    @classmethod
    def from_pretrained(cls, path, base=None):
        """A Hugging Face-format folder (the checkpoints section); training settings from `base`."""
        return load_pretrained(path, base)


def flops_per_token(model, cfg):
    """Training FLOPs per token, for MFU: 6 per weight a token is multiplied by (2 forward, 4
    backward), plus 12·L·H·T for attention. Embedding tables are looked up, not multiplied.
    The MLM head multiplies at the max_predictions masked slots of a sequence; the pooler and NSP
    head once in it."""
    P, T = cfg.max_predictions, cfg.seq_len
    weights = (numel(model.blocks) + numel(model.mlm, model.head) * P / T
               + numel(model.pooler, model.nsp) / T)
    return 6 * weights + 12 * cfg.layers * cfg.hidden * T


# --- objective ---


def load_data(corpus, tokenizer, out, cfg):
    """The training examples of each split (make_instances), made once from the token cache and
    cached beside it, and what masking needs to know about the vocabulary."""
    data = cache_tokens(corpus, tokenizer, Path(out) / "cache")
    special = {role: tokenizer.token_to_id(token) for role, token in SPECIALS.items()}
    # what make_instances reads
    key = [Path(__file__).stem, cfg.seq_len, cfg.dupe_factor, cfg.short_seq_prob, cfg.next_sentence]
    for name, split in data.items():
        instances = make_instances(split, cfg, np.random.default_rng(12345), special)  # its seed
        split.update(cached(split["folder"] / f"{name}.instances", key, instances,
                            "making the training examples"))
        split["special"], split["mask_id"] = np.array(list(special.values())), special["mask"]
        split["pad_id"] = special["pad"]
        split["cls_id"], split["sep_id"] = special["cls"], special["sep"]
        # padding, start and separator are never masked; the unknown token may be, as in the release
        split["never_masked"] = np.array([special["pad"], special["cls"], special["sep"]])
        # the random replacements
        split["normal"] = np.setdiff1d(np.arange(tokenizer.get_vocab_size()), split["special"])
        if not len(split["pair_labels"]):
            raise UserError("the corpus is too small: a split made no training examples")
    return data


def make_instances(split, cfg, rng, special):
    """[CLS] A [SEP] B [SEP] pairs, as the release's create_pretraining_data, each document
    dupe_factor times: documents cut into chunks of sentences up to a target length (10% of the
    time a shorter one), A = the first k sentences of a chunk, B = the rest (label 0) or, half of
    the time, sentences of a random other document (label 1; the chunk's unused sentences go
    back). §3.1, A.1.
    A and B are each a run of one document's sentences, so an instance is stored as two token
    ranges of the cache, (start, end) each, and its label; `assemble` builds the rows of a batch
    from them. Only sentence lengths are read here, a block of documents at a time."""
    sents, docs = np.asarray(split["sentences"]), np.asarray(split["documents"])  # memmaps, read
    longest = cfg.seq_len - 3  # room for [CLS], [SEP], [SEP]
    # each pass over the documents pairs and truncates differently (and gets other masks)
    for block in in_blocks(len(docs), "making instances", passes=cfg.dupe_factor):
        made = []  # (A's start, end, B's start, end, label) of the block's instances
        bounds = docs[block:block + 4096].tolist()
        base = bounds[0][0]
        offsets = sents[base:bounds[-1][1]].tolist()  # offsets[i - base]: sentence i's (start, end)
        # one target length per document and pass, as the release
        for d, (first, last) in enumerate(bounds, block):
            target = rng.integers(2, longest + 1) if rng.random() < cfg.short_seq_prob else longest
            start, length, k = first, 0, first  # the chunk: sentences start..k
            while k < last:
                length += offsets[k - base][1] - offsets[k - base][0]
                if k == last - 1 or length >= target:
                    size = k + 1 - start  # sentences in the chunk
                    a_end = start + (rng.integers(1, size) if size >= 2 else 1)  # A: start..a_end-1
                    a = [offsets[start - base][0], offsets[a_end - 1 - base][1]]
                    # B from another document half of the time (never, in the no-NSP baseline)
                    if cfg.next_sentence and (size == 1 or rng.random() < 0.5) and len(docs) > 1:
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
                    else:  # B continues A; a one-sentence chunk without NSP: [CLS] A [SEP] [SEP]
                        label, b = 0, [a[1], offsets[k - base][1]]
                    excess = a[1] - a[0] + b[1] - b[0] - longest  # tokens to cut, a draw each
                    for u in rng.random(excess).tolist() if excess > 0 else ():
                        longer = a if a[1] - a[0] > b[1] - b[0] else b  # cut at its front or back
                        if u < 0.5:
                            longer[0] += 1
                        else:
                            longer[1] -= 1
                    if a[1] > a[0] and (b[1] > b[0] or not cfg.next_sentence):
                        made.append([*a, *b, label])
                    start, length = k + 1, 0
                k += 1
        made = np.array(made, np.int64).reshape(-1, 5)
        yield {"a": made[:, :2], "b": made[:, 2:4], "pair_labels": made[:, 4]}


def assemble(split, instances, T):
    """The rows [CLS] A [SEP] B [SEP] of `instances` (BERT §3), padded to seq_len (B, T), and their
    segment ids (B, T), gathered from the token cache."""
    # column:   0      1 .. n_a   n_a + 1   n_a + 2 .. n_a + n_b + 1   n_a + n_b + 2   .. T - 1
    # token:    [CLS]  A ..       [SEP]     B ..                       [SEP]           [PAD] ..
    # segment:  0      0 ..       0         1 ..                       1               0 ..
    a, b = split["a"][instances], split["b"][instances]  # (B, 2) token ranges
    n_a, n_b = a[:, 1:] - a[:, :1], b[:, 1:] - b[:, :1]  # (B, 1)
    col = np.arange(T)[None, :]  # (1, T)
    in_a, in_b = (col >= 1) & (col <= n_a), (col >= n_a + 2) & (col < n_a + n_b + 2)  # (B, T)
    # (B, T) offsets in the token cache
    source = np.where(in_a, a[:, :1] + col - 1, np.where(in_b, b[:, :1] + col - n_a - 2, 0))
    ids = np.where(in_a | in_b, split["tokens"][source], split["pad_id"]).astype(np.int64)
    rows = np.arange(len(ids))
    ids[:, 0] = split["cls_id"]
    ids[rows, n_a[:, 0] + 1] = split["sep_id"]  # after A
    ids[rows, (n_a + n_b)[:, 0] + 2] = split["sep_id"]  # after B
    return ids, ((col >= n_a + 2) & (col <= n_a + n_b + 2)).astype(np.int64)


# uniform()'s streams (a keyed hash, in the shared plumbing): the same seed, key and stream give the
# same numbers in any process, so a mask is a function of its key alone
CHOOSE, FATE, RANDOM_TOKEN = 0, 1, 2  # which tokens; what becomes of each; which random token


def mask_tokens(input_ids, keys, seed, split, cfg):
    """Choose 15% of each row's tokens (never the start, separator or padding; at most
    max_predictions); of those 80% become the mask token, 10% a random non-special token, 10% stay
    (BERT §3.1). Random numbers are keyed by `keys`. Returns the new ids (B, T), and the chosen
    positions and their labels (B, P), padded with label -100."""
    B, T = input_ids.shape
    P = cfg.max_predictions
    candidate = ~np.isin(input_ids, split["never_masked"])  # (B, T)
    n = np.minimum(P, np.maximum(1, np.rint(candidate.sum(1) * cfg.mask_prob))).astype(np.int64)
    # a random order of each row's candidates (the others sort last), the first P of it
    order = np.argsort(np.where(candidate, uniform(seed, keys, T, CHOOSE), 2.0), axis=1)[:, :P]
    chosen = np.arange(P)[None, :] < n[:, None]  # (B, P)
    positions = np.where(chosen, order, 0)
    labels = np.where(chosen, np.take_along_axis(input_ids, positions, 1), -100)  # (B, P)
    u = uniform(seed, keys, P, FATE)
    pick = (uniform(seed, keys, P, RANDOM_TOKEN) * len(split["normal"])).astype(np.int64)  # (B, P)
    random_tokens = split["normal"][pick]
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
    """Example `i` is instance epoch_order[i % n] of epoch i // n. Its mask is keyed by the
    instance, not the example: the same instance always has the same mask (STATIC, as the release's
    pre-made data)."""
    n = len(data["pair_labels"])
    instances = np.array([epoch_order(n, seed, int(i) // n)[int(i) % n] for i in ids])
    input_ids, type_ids = assemble(data, instances, cfg.seq_len)  # (B, T) each
    keys = instances  # the mask is a function of the instance: the same every epoch (STATIC)
    masked, positions, labels = mask_tokens(input_ids, keys, seed, data, cfg)
    return {"input_ids": torch.from_numpy(masked), "token_type_ids": torch.from_numpy(type_ids),
            "attention_mask": torch.from_numpy((input_ids != data["pad_id"]).astype(np.int64)),
            "mlm_positions": torch.from_numpy(positions), "mlm_labels": torch.from_numpy(labels),
            "pair_labels": torch.from_numpy(data["pair_labels"][instances])}


def compute_loss(model, batch, cfg):
    """Masked LM cross-entropy over the chosen positions + NSP cross-entropy (§3.1; A.2: "the sum of
    the mean masked LM likelihood and the mean next sentence prediction likelihood"). Returns the
    loss and metrics."""
    labels = batch["mlm_labels"]  # (B, P), -100 in the unused slots
    # (B, P, V), (B, 2)
    mlm_logits, pair_logits = model(batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"], batch["mlm_positions"])
    # (B·P, V) against (B·P,); -100 is ignored
    mlm_loss = F.cross_entropy(mlm_logits.flatten(0, 1).float(), labels.flatten())
    pair_loss = F.cross_entropy(pair_logits.float(), batch["pair_labels"])  # both classes count
    chosen = labels != -100
    metrics = {"mlm_loss": mlm_loss, "nsp_loss": pair_loss,
               "mlm_acc": ((mlm_logits.argmax(-1) == labels) & chosen).sum() / chosen.sum(),
               "nsp_acc": (pair_logits.argmax(-1) == batch["pair_labels"]).float().mean()}
    if not cfg.next_sentence:  # not BERT: the no-NSP baseline, its NSP head not trained or scored
        metrics = {k: v for k, v in metrics.items() if not k.startswith("nsp")}
    # × 0 without NSP rather than left out: every weight stays in the graph, as DDP expects
    return mlm_loss + pair_loss * cfg.next_sentence, metrics


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
    """How finetune.py fine-tunes this model: §4 and A.3, and the release's run_classifier."""
    lr: float = 2e-5  # the best of 5e-5, 4e-5, 3e-5 and 2e-5 on each task's dev set, §4.1
    batch_size: int = 32  # BERT §4.1
    epochs: int = 3  # §4.1
    warmup: float = 0.1  # a fraction of the steps, then linear decay: warmup_proportion, release
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
    """Token ids and segment ids of each example: [CLS] A [SEP] B [SEP] with segments
    0 ... 0 1 ... 1 (§4.1, Figure 4), or [CLS] A [SEP] for one text; the longer text is cut
    first to fit max_len, as the release's."""
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
    """BertForSequenceClassification: the pooled [CLS] (the pretrained pooler), dropout, and one
    linear layer to the labels, its only new weights (§4.1)."""

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


def finetune_groups(clf, recipe):
    """The fine-tuning optimiser's parameter groups: weight decay on matrices and embeddings, not on
    biases or LayerNorm gains, one learning rate for every layer."""
    params = [p for p in clf.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.weight_decay,
             "lr": recipe.lr},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr": recipe.lr}]


# --- demo ---


def demo_arguments(p):
    p.add_argument("--fill", dest="demo", default=None, metavar="TEXT",
                   help=f"print the top-5 fillers of each {SPECIALS['mask']} in TEXT")


def demo(model, args):
    """Print the five likeliest fillers of each mask in --fill (after --train: a fixed sentence)."""
    text = args.demo
    if text is None:
        text = f"The {SPECIALS['mask']} statement raises an exception."
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
        # special tokens by name, never ''
        shown = [tok.decode([int(i)], skip_special_tokens=False) for i in top[n]]
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
    ("cls.predictions.decoder.bias", "head.bias"),  # the next one's tensor: a file holds either
    ("cls.predictions.bias", "head.bias"),
    ("cls.seq_relationship", "nsp"),
]


def load_pretrained(path, base=None):
    """A `bert` folder in the Hugging Face layout (BertForPreTraining, BertForMaskedLM or BertModel;
    with or without the `bert.` prefix; legacy gamma/beta names); heads the file lacks are
    initialised and listed."""
    hf, sd = read_pretrained(path, "bert")
    base = base or PRESETS["base"]  # what the file does not say
    cfg = dataclasses.replace(base, vocab_size=hf["vocab_size"],
                              max_len=hf["max_position_embeddings"],
                              type_vocab=hf.get("type_vocab_size", base.type_vocab),
                              layers=hf["num_hidden_layers"], hidden=hf["hidden_size"],
                              heads=hf["num_attention_heads"], ffn=hf["intermediate_size"],
                              activation=hf.get("hidden_act", base.activation),
                              eps=hf.get("layer_norm_eps", base.eps),
                              dropout=hf.get("hidden_dropout_prob", base.dropout))
    if cfg.activation not in common.ACTIVATIONS:
        raise UserError(f"{path}: activation {cfg.activation!r} is not supported")
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    skip = ("cls.predictions.decoder.weight",  # tied
            "embeddings.position_ids", "embeddings.token_type_ids")  # buffers
    model = Model(cfg)
    load_weights(model, rename(sd, HF_NAMES, skip), path,
                 optional=("pooler.", "mlm.", "head.bias", "nsp."))
    model.tokenizer = load_tokenizer(hf.path)  # the folder, or the hub model's
    return model


# BertForSequenceClassification's head -> ours (the pooler is the pretrained one)
HF_HEAD = [("classifier", "out")]


def hf_config(cfg, architecture):
    """The config.json of the Hugging Face model of this shape."""
    return {"architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "intermediate_size": cfg.ffn,
            "hidden_act": cfg.activation,
            "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
            "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.type_vocab,
            "layer_norm_eps": cfg.eps, "initializer_range": cfg.init_std,
            "pad_token_id": 0}


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
    """The pretrained model as a Hugging Face BertForPreTraining folder."""
    # the tied head is stored once
    sd = unrename({k: v for k, v in model.state_dict().items() if k != "head.weight"}, HF_NAMES)
    sd = {k if k.startswith("cls.") else "bert." + k: v for k, v in sd.items()}
    write_pretrained(folder, sd, hf_config(model.cfg, "BertForPreTraining"), *hf_tokenizer(model))


def export_classifier(clf, folder, labels, regression):
    """A fine-tuned Classifier as a Hugging Face BertForSequenceClassification folder."""
    encoder = {k.removeprefix("model."): v for k, v in clf.state_dict().items()
               if k.startswith("model.")
               and not k.startswith(("model.mlm.", "model.head.", "model.nsp."))}
    sd = {"bert." + k: v for k, v in unrename(encoder, HF_NAMES).items()}
    sd.update(unrename({k: v for k, v in clf.state_dict().items() if not k.startswith("model.")},
                       HF_HEAD))
    config = {**hf_config(clf.model.cfg, "BertForSequenceClassification"),
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
