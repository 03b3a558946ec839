"""GPT-1's loss four ways on one bf16 (N, V) logits tensor: the blocked LMLoss and the plain F.cross_entropy, eager
and under torch.compile; the median of 5 steps (loss and backward) after the first, the first call's seconds (the
compilation), the graphs and graph breaks. It decided where gpt.py's lm_loss uses which (benchmarks/RESULTS.md).

    python benchmarks/lm_loss.py --rows 2048 --vocab 40478
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpt  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1024, help="N, positions (default: 1024)")
    p.add_argument("--vocab", type=int, default=4096, help="V, the vocabulary (default: 4096)")
    args = p.parse_args(argv)
    if args.rows <= 0 or args.vocab <= 1:
        print("error: --rows must be positive and --vocab above 1", file=sys.stderr)
        return 2
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, dtype=torch.bfloat16)
    targets = torch.randint(0, args.vocab, (args.rows,))

    def blocked(x, t):
        return gpt.LMLoss.apply(x, t)

    def plain(x, t):
        return F.cross_entropy(x.float(), t)

    for name, fn in [("blocked, eager", blocked), ("plain, eager", plain),
                     ("blocked, compiled", torch.compile(blocked)), ("plain, compiled", torch.compile(plain))]:
        torch._dynamo.reset()
        counters.clear()
        x = logits.clone().requires_grad_()
        times = []
        for _ in range(6):
            x.grad = None
            t0 = time.perf_counter()
            loss = fn(x, targets)
            loss.backward()
            times.append(time.perf_counter() - t0)
        print(f"{name:18} {args.rows} x {args.vocab}: loss {loss.item():.6f}, first call {times[0]:.2f} s, "
              f"step {sorted(times[1:])[2] * 1e3:.1f} ms, graphs {counters['stats']['unique_graphs']}, "
              f"graph breaks {sum(counters['graph_break'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
