"""What a pretrained encoder knows about the built-in task before fine-tuning: a linear probe on frozen features.

For the pretrained checkpoint and a randomly initialised model of the same shape, the final hidden states of each
sentence (in the paper's fine-tuning input format), averaged over its tokens, are fed to a logistic regression
trained on the built-in task's training split; the dev accuracy says how much of the task the features already
hold. Features from the embedding table alone (the average token embedding) separate what the vocabulary learned
from what the layers add.

    python benchmarks/frozen_probe.py bert [--ckpt runs/bert/ckpt.pt]
"""

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import finetune  # noqa: E402


@torch.no_grad()
def features(mod, model, examples, pad_id):
    """(N, H) mean final states and (N, E) mean token embeddings over each example's tokens."""
    data = finetune.encode_task(mod, model.tokenizer, examples, 128, False)
    states, embeds = [], []
    order = []
    for rows, batch in zip(finetune.groups(data, 64), finetune.batches(data, 64, pad_id)):
        mask = batch["attention_mask"].float()[..., None]  # (B, T, 1)
        types = batch["token_type_ids"] if mod.__name__ in ("bert", "albert", "electra") else None
        h = model.encode(batch["input_ids"], batch["attention_mask"], types)  # (B, T, H)
        e = model.embeddings.tokens(batch["input_ids"])  # (B, T, E)
        states.append((h * mask).sum(1) / mask.sum(1))
        embeds.append((e * mask).sum(1) / mask.sum(1))
        order += list(rows)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(states)[inverse], torch.cat(embeds)[inverse]


def probe(train_x, train_y, dev_x, dev_y, classes, steps=300):
    """Dev accuracy of a logistic regression on standardised features (Adam, a little weight decay)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, dev_x = (train_x - mean) / std, (dev_x - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(layer(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float((layer(dev_x).argmax(-1) == dev_y).float().mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paper", choices=finetune.PAPERS)
    p.add_argument("--ckpt", default=None, help="default: runs/PAPER/ckpt.pt")
    args = p.parse_args(argv)
    mod = importlib.import_module(args.paper)
    args.from_pretrained = None
    try:
        pretrained = finetune.load_pretrained(mod, args)
    except (finetune.UserError, mod.UserError) as e:
        sys.exit(f"error: {e}")
    task = finetune.builtin_task()
    torch.manual_seed(0)
    scratch = mod.Model(pretrained.cfg)
    scratch.tokenizer = pretrained.tokenizer
    clf = mod.Classifier(pretrained, 2, mod.RECIPES["paper"])  # only for the padding id and GPT-1's task tokens
    if clf.model.cfg.vocab_size != scratch.cfg.vocab_size:  # GPT-1's embedding table grew: the same for both
        scratch = mod.Model(clf.model.cfg)
        scratch.tokenizer = pretrained.tokenizer
    train_y = torch.tensor([label for _, _, label in task["train"]])
    dev_y = torch.tensor([label for _, _, label in task["dev"]["dev"]])
    print(f"{args.paper}: linear probe on frozen features, built-in task dev accuracy (majority 0.175)")
    for name, model in (("pretrained", clf.model.eval()), ("random init", scratch.eval())):
        train_h, train_e = features(mod, model, task["train"], clf.pad_id)
        dev_h, dev_e = features(mod, model, task["dev"]["dev"], clf.pad_id)
        layers = probe(train_h, train_y, dev_h, dev_y, len(task["labels"]))
        table = probe(train_e, train_y, dev_e, dev_y, len(task["labels"]))
        print(f"  {name:<12} final states {layers:.3f}   token embeddings alone {table:.3f}")


if __name__ == "__main__":
    main()
