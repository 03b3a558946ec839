"""How data preparation grows with the corpus: each script's phases, cold and warm, at a few corpus sizes.

python benchmarks/data_scaling.py                         # 10, 50 and 200 MB, all five scripts (about 40 minutes)
python benchmarks/data_scaling.py --sizes 5,20 --scripts bert,roberta
python benchmarks/data_scaling.py --write                 # also put the table into benchmarks/RESULTS.md

The corpora are made from text every machine has, the default corpus (the docs shipped with Python): copy k of it
has the words of each sentence shuffled with seed k, so the copies share a vocabulary but not their sentences
(identical copies would put every held-out sentence in training). Each (script, size) runs in a fresh process:
`SCRIPT.py --prepare-only` from a cold run folder (tokenizer training, tokenizing into the cache, the training
examples), timed per phase from the lines it prints, with the process's peak resident memory; then a warm start,
`SCRIPT.py --train --steps 1` on the same folder, timed to the line that announces training (the caches mapped,
the model built). The table gives each phase's seconds, the growth from the middle size to the largest against
linear (1.00 = linear), and the cold time extrapolated linearly to wikitext-103 (540 MB) and to 10 GB.
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]
# the lines that open each phase (printed by the scripts), in order
PHASES = [("tokenizer", "training the tokenizer"), ("tokenize", "tokenizing the corpus"),
          ("instances", "making the training examples"), ("end", "prepared ")]
MARK = "<!-- data_scaling.py -->"


def make_corpus(path, megabytes):
    """`megabytes` MB of English prose: copies of the default corpus, words shuffled within each sentence."""
    if path.exists() and path.stat().st_size >= megabytes * 1e6:
        return path
    import gpt

    docs = gpt.default_corpus()
    tmp, written, copy = path.with_suffix(".tmp"), 0, 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            rng = random.Random(copy)
            for doc in docs:
                lines = []
                for sentence in doc:
                    words = sentence.split()
                    if copy:
                        rng.shuffle(words)
                    lines.append(" ".join(words))
                text = "\n".join(lines) + "\n\n"
                f.write(text)
                written += len(text.encode())
                if written >= megabytes * 1e6:
                    break
            copy += 1
    os.replace(tmp, path)
    return path


def timed_run(argv, env):
    """Run a command; returns ({line prefix: seconds after start when it appeared}, peak RSS in GB, all output)."""
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    seen, lines = {}, []
    for line in proc.stdout:
        lines.append(line)
        for _, prefix in PHASES + [("ready", "__ready__")]:
            if line.startswith(prefix) and prefix not in seen:
                seen[prefix] = time.time() - start
        if re.match(r"\w+\.py: [\d,]+ parameters", line) and "__ready__" not in seen:
            seen["__ready__"] = time.time() - start
    _, status, usage = os.wait4(proc.pid, 0)
    proc.wait()
    if status:
        raise SystemExit(f"failed ({status}): {' '.join(map(str, argv))}\n{''.join(lines[-20:])}")
    seen["__exit__"] = time.time() - start
    return seen, usage.ru_maxrss / 1e6, "".join(lines)  # ru_maxrss: KB on Linux


def measure(script, corpus, folder, env):
    """Phase seconds of a cold --prepare-only, its peak RSS, and the warm start's seconds to the training line."""
    shutil.rmtree(folder, ignore_errors=True)
    cold, rss, _ = timed_run([sys.executable, f"{script}.py", "--prepare-only", "--data", str(corpus),
                              "--out", str(folder)], env)
    marks = [(name, cold.get(prefix)) for name, prefix in PHASES]
    marks = [(name, t) for name, t in marks if t is not None]
    phases = {name: round(b - a, 1) for (name, a), (_, b) in zip(marks, marks[1:])}
    phases["start"] = round(marks[0][1], 1)  # Python, torch and the corpus's files checked
    phases["cold"] = round(cold["__exit__"], 1)
    warm, warm_rss, _ = timed_run([sys.executable, f"{script}.py", "--train", "--steps", "1", "--data", str(corpus),
                                   "--out", str(folder)], env)
    phases["warm"] = round(warm["__ready__"], 1)
    phases["rss"], phases["warm_rss"] = round(rss, 2), round(warm_rss, 2)
    return phases


def table(results, sizes):
    """The markdown table of the results: per script and size, then growth and extrapolation per script."""
    lines = ["| script | corpus | start | tokenizer | tokenize | examples | cold total | peak RSS | warm start |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (script, size), r in results.items():
        lines.append(f"| {script}.py | {size} MB | {r['start']:.0f} s | {r.get('tokenizer', 0):.0f} s | "
                     f"{r.get('tokenize', 0):.0f} s | {r.get('instances', 0):.0f} s | {r['cold']:.0f} s | "
                     f"{r['rss']:.2f} GB | {r['warm']:.1f} s |")
    if len(sizes) >= 2:
        mid, top = sizes[-2], sizes[-1]
        lines += ["", f"| script | cold growth {mid} → {top} MB vs linear | s per MB at {top} MB | "
                      "540 MB (wikitext-103), extrapolated | 10 GB, extrapolated |", "|---|---:|---:|---:|---:|"]
        for script in dict.fromkeys(s for s, _ in results):
            if (script, mid) not in results or (script, top) not in results:
                continue
            a, b = results[script, mid]["cold"], results[script, top]["cold"]
            start = results[script, top]["start"]
            per_mb = (b - start) / top
            growth = ((b - start) / (a - results[script, mid]["start"])) / (top / mid)
            lines.append(f"| {script}.py | {growth:.2f} | {per_mb:.2f} | {(start + per_mb * 540) / 60:.0f} min | "
                         f"{(start + per_mb * 10_000) / 3600:.1f} h |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,50,200",
                   help="corpus sizes in MB, comma-separated, smallest first (default: 10,50,200)")
    p.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated (default: all five)")
    p.add_argument("--out", default="runs/data_scaling",
                   help="folder for the corpora and the run folders (default: runs/data_scaling)")
    p.add_argument("--write", action="store_true", help="put the table into benchmarks/RESULTS.md")
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    scripts = args.scripts.split(",")
    if not set(scripts) <= set(SCRIPTS) or not sizes or min(sizes) < 1:
        raise SystemExit(f"error: --scripts from {', '.join(SCRIPTS)}; --sizes positive whole MB")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = {}
    for size in sizes:
        corpus = make_corpus(out / f"corpus-{size}MB.txt", size)
        for script in scripts:
            results[script, size] = measure(script, corpus, out / f"{script}-{size}MB", env)
            print(script, size, "MB", results[script, size], flush=True)
            shutil.rmtree(out / f"{script}-{size}MB", ignore_errors=True)  # the caches of 200 MB fill a disk fast
    text = table(results, sizes)
    print(text)
    if args.write:
        path = ROOT / "benchmarks" / "RESULTS.md"
        results_md = path.read_text()
        block = f"{MARK}\n{text}\n{MARK}"
        if MARK in results_md:
            before, _, rest = results_md.partition(MARK)
            results_md = before + block + rest.partition(MARK)[2]
        else:
            results_md += "\n" + block + "\n"
        path.write_text(results_md)


if __name__ == "__main__":
    main()
