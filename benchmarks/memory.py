"""Memory of a training step at one size, for scripts whose presets share a hidden size (README: ALBERT vs BERT).

python benchmarks/memory.py bert:base albert:base   # each in a fresh process; prints a table
Reports parameters, the bytes of weights + gradients + optimiser state, and the growth of the process's peak
resident memory over one forward/backward/step on a random batch of 8 x 128 on the CPU.
"""

import argparse
import importlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]


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
              "mlm_positions": positions, "mlm_labels": labels, "pair_labels": torch.zeros(batch, dtype=torch.long),
              "targets": ids,
              "content": torch.ones_like(ids, dtype=torch.bool), "uniform_tokens": labels}
    loss, _ = mod.compute_loss(model, batch_, model.cfg)
    loss.backward()
    optimizer.step()
    tensors = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    state = sum(t.numel() * t.element_size() for t in tensors)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    return {"model": f"{script}:{size}", "hidden": cfg.hidden, "params": model.num_params(),
            "weights_grads_optimizer_mb": (2 * weights + state) / 2**20, "peak_rss_growth_mb": peak / 1024}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="+", metavar="SCRIPT:SIZE", help="e.g. bert:base albert:base")
    args = p.parse_args(argv)
    for spec in args.specs:  # checked before any child process starts
        script, _, size = spec.partition(":")
        if script not in SCRIPTS:
            fail(f"{spec}: unknown script {script!r}; choose one of {', '.join(SCRIPTS)}")
        presets = importlib.import_module(script).PRESETS
        if size not in presets:
            fail(f"{spec}: {script}.py has no size {size!r}; choose one of {', '.join(presets)}")
    rows = []
    for spec in args.specs:
        child = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True)
        if child.returncode:
            fail(f"{spec}: the measurement failed: {(child.stderr.strip().splitlines() or ['no message'])[-1]}")
        rows.append(json.loads(child.stdout))
    print(f"{'model':<14} {'hidden':>6} {'parameters':>12} {'weights+grads+optimiser':>24} {'peak RSS growth':>16}")
    for r in rows:
        print(f"{r['model']:<14} {r['hidden']:>6} {r['params']:>12,} {r['weights_grads_optimizer_mb']:>21.1f} MB "
              f"{r['peak_rss_growth_mb']:>13.1f} MB")
    return 0


def fail(message):
    """Bad input: one line on stderr and exit status 2, as in the paper scripts."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":  # one measurement, in a fresh process
        print(json.dumps(measure(*sys.argv[2].split(":"))))
        sys.exit(0)
    sys.exit(main())
