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
import compare  # noqa: E402
import finetune  # noqa: E402


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
    print(f"{args.paper}: linear probe on frozen features, built-in task dev accuracy (majority 0.175)")
    cpu = torch.device("cpu")
    for name, model in (("pretrained", clf.model), ("random init", scratch)):
        train_h, train_e, train_y = compare.features(mod, model, clf.pad_id, task["train"], 128, cpu)
        dev_h, dev_e, dev_y = compare.features(mod, model, clf.pad_id, task["dev"]["dev"], 128, cpu)
        layers, table = (sum(compare.linear_probe(x, train_y, d, dev_y, len(task["labels"]))) / len(dev_y)
                         for x, d in ((train_h, dev_h), (train_e, dev_e)))
        print(f"  {name:<12} final states {layers:.3f}   token embeddings alone {table:.3f}")

if __name__ == "__main__":
    main()
