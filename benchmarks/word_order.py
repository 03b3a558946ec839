"""Does a trained encoder read word order? Its masked-LM loss and accuracy on the validation split, as the run
evaluates it and with each row's words shuffled: the same masked targets and the same bag of context words, only
their order differs. A model that has learned only which words occur together scores the same on both.

    python benchmarks/word_order.py bert runs/bert          # also roberta, albert, and electra (its generator)

The run folder's checkpoint, tokenizer and token cache are used; --data must name the corpus the run trained on.
"""

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def shuffle_words(ids, positions, labels, fixed, gen):
    """Permute each row's tokens except `fixed` ones ([CLS], [SEP], padding), masks included; the masked positions
    follow their tokens, so every target keeps its mask and only the order around it changes."""
    ids, positions = ids.clone(), positions.clone()
    for r in range(len(ids)):
        movable = torch.nonzero(~torch.isin(ids[r], fixed)).squeeze(1)
        source = movable[torch.randperm(len(movable), generator=gen)]
        ids[r, movable] = ids[r, source].clone()  # position movable[j] now holds the token from source[j]
        moved_to = torch.arange(ids.shape[1])
        moved_to[source] = movable
        positions[r] = torch.where(labels[r] != -100, moved_to[positions[r]], positions[r])
    return ids, positions


@torch.no_grad()
def probe(module, model, split, cfg, seed=1, repeats=3):
    """MLM loss and accuracy, as is and shuffled, over `repeats` maskings of every validation example."""
    model.eval()
    fixed, gen = torch.as_tensor(split["never_masked"]), torch.Generator().manual_seed(seed)
    sums, n = {"loss": 0.0, "loss_shuffled": 0.0, "acc": 0.0, "acc_shuffled": 0.0}, 0
    # the split's examples: stored as rows (ELECTRA), token ranges with labels (BERT, ALBERT) or packed rows (RoBERTa)
    count = next(len(split[k]) for k in ("input_ids", "pair_labels", "rows") if k in split)
    total = repeats * count
    for start in range(0, total, 64):
        b = module.get_batch(split, np.arange(start, min(start + 64, total)), seed, cfg)
        labels = b["mlm_labels"]
        shuffled = shuffle_words(b["input_ids"], b["mlm_positions"], labels, fixed, gen)
        for suffix, (ids, positions) in (("", (b["input_ids"], b["mlm_positions"])), ("_shuffled", shuffled)):
            extra = {"labels": labels} if module.__name__ == "electra" else {}  # ELECTRA: the generator's logits
            out = model(ids, b["attention_mask"], b.get("token_type_ids"), positions, **extra)
            logits = (out[0] if isinstance(out, tuple) else out).float()  # (B, P, V)
            sums["loss" + suffix] += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
            sums["acc" + suffix] += float(((logits.argmax(-1) == labels) & (labels != -100)).sum())
        n += int((labels != -100).sum())
    return {k: v / n for k, v in sums.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("script", choices=["bert", "roberta", "albert", "electra"])
    p.add_argument("out", help="the run folder")
    p.add_argument("--data", default=None, help="the corpus the run trained on (default: the docs shipped with Python)")
    args = p.parse_args(argv)
    module = importlib.import_module(args.script)
    try:
        state = module.load_checkpoint(Path(args.out) / "ckpt.pt")
        cfg = module.Config(**state["config"])
        model = module.Model(cfg)
        model.load_state_dict(state["model"])
        tokenizer = state["tokenizer"]  # the one the run trained with
        split = module.load_data(module.read_corpus(args.data), tokenizer, args.out, cfg)["val"]
    except module.UserError as e:
        sys.exit(f"error: {e}")
    r = probe(module, model, split, cfg)
    print(f"{args.script} at step {state['step']}, validation MLM: loss {r['loss']:.3f} as is, "
          f"{r['loss_shuffled']:.3f} shuffled; accuracy {r['acc']:.1%} as is, {r['acc_shuffled']:.1%} shuffled")
    return r


if __name__ == "__main__":
    main()
