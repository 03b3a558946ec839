"""benchmarks/word_order.py: the shuffle probe keeps every target, its mask and the bag of words; only order moves."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import word_order  # noqa: E402


def test_shuffling_keeps_targets_masks_and_words_and_moves_only_the_order():
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (6, 20))
    ids[:, 0], ids[:, 9], ids[:, 15:] = 2, 3, 0  # [CLS] ... [SEP] ... padding
    positions = torch.stack([torch.randperm(8)[:3] + 1 for _ in range(6)])  # masked slots among tokens 1..8
    labels = ids.gather(1, positions)
    masked = ids.scatter(1, positions, 4)
    labels[0, 2] = -100  # an unused slot stays where it is
    new, moved = word_order.shuffle_words(masked, positions, labels, torch.tensor([0, 2, 3]), torch.Generator())
    for r in range(6):
        fixed = torch.isin(masked[r], torch.tensor([0, 2, 3]))
        assert torch.equal(new[r, fixed], masked[r, fixed])  # [CLS], [SEP] and padding stay
        assert sorted(new[r].tolist()) == sorted(masked[r].tolist())  # the same bag of tokens
        used = labels[r] != -100
        assert (new[r, moved[r, used]] == 4).all() and len(set(moved[r, used].tolist())) == int(used.sum())
    assert moved[0, 2] == positions[0, 2] and not torch.equal(new, masked)
