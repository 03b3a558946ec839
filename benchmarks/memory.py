"""Memory of a training step at one size, for scripts whose presets share a hidden size (README: ALBERT vs BERT).

python benchmarks/memory.py bert:base albert:base   # each in a fresh process; prints a table
Reports parameters, the bytes of weights + gradients + optimiser state, and the growth of the process's peak
resident memory over one forward/backward/step on a random batch of 8 x 128 on the CPU.
"""

import importlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(script, size, batch=8, seq=128):
    mod = importlib.import_module(script)
    cfg = mod.PRESETS[size]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = mod.Model(cfg)
    optimizer = mod.configure_optimizer(model, cfg, torch.device("cpu"))
    ids = torch.randint(5, cfg.vocab_size, (batch, seq))
    positions = torch.from_numpy(np.sort(np.random.default_rng(0).choice(seq, (batch, 20)), axis=1))
    labels = ids.gather(1, positions)
    batch_ = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
              "mlm_positions": positions, "mlm_labels": labels, "nsp_labels": torch.zeros(batch, dtype=torch.long),
              "sop_labels": torch.zeros(batch, dtype=torch.long)}
    loss, _ = mod.compute_loss(model, batch_)
    loss.backward()
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    return {"model": f"{script}:{size}", "hidden": cfg.hidden, "params": model.num_params(),
            "weights_grads_optimizer_mb": (2 * weights + state) / 2**20, "peak_rss_growth_mb": peak / 1024}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(*sys.argv[2].split(":"))))
        sys.exit(0)
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True,
                                      check=True).stdout) for spec in sys.argv[1:]]
    print(f"{'model':<14} {'hidden':>6} {'parameters':>12} {'weights+grads+optimiser':>24} {'peak RSS growth':>16}")
    for r in rows:
        print(f"{r['model']:<14} {r['hidden']:>6} {r['params']:>12,} {r['weights_grads_optimizer_mb']:>21.1f} MB "
              f"{r['peak_rss_growth_mb']:>13.1f} MB")
