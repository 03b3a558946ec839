"""The one table of `benchmarks/gpu_check.sh`: each script's short training run and its bench.py row, with the
GPU targets (MFU >= 45% for gpt.py and bert.py, ours/HF >= 1.3 and a host data share under 5% for all five).

    python benchmarks/gpu_table.py OUT RUNS [SCRIPT ...]     # the folders gpu_check.sh wrote

Reads OUT/logs/SCRIPT.log (its `micro-batch:` and `rc=` lines, written by gpu_check.sh), RUNS/SCRIPT/metrics.jsonl,
OUT/meta.txt, OUT/bench*.json, OUT/logs/bench*.log and OUT/profile*.txt (one of each a bench slot); prints the table, then the profile of the model
furthest below a target, and writes the table to OUT/table.md. A stage that did not run or failed shows as "—",
with the reason below the table.
"""

import json
import re
import sys
from pathlib import Path

SCRIPTS = ["gpt", "bert", "roberta", "albert", "electra"]
MFU_TARGET = {"gpt": 0.45, "bert": 0.45}  # the other three: no MFU target, only ours/HF and the data share
RATIO_TARGET, DATA_TARGET = 1.3, 0.05


def outcome(text):
    """A log's last `rc=` line and its error (the exception of its last traceback, else its last `error:` line), as
    one short reason; and whether the rc was 0."""
    rc = re.findall(r"^rc=(.*)$", text, re.M)
    error = re.findall(r"^error: .*$", text, re.M)
    if "Traceback (most recent call last):" in text:
        after = text.rsplit("Traceback (most recent call last):", 1)[1].splitlines()
        error = [line for line in after if line.strip() and not line[0].isspace()][:1]
    reason = f"rc={rc[-1] if rc else '?'}" + (f"; {error[-1][:160]}" if error else "")
    return reason, bool(rc) and rc[-1].split()[0] == "0"


def records(path):
    """The JSON lines of a file; a line cut short by a killed run is left out."""
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return found


def training_run(logs, runs, script):
    """The steady state of the script's run: its last logged interval with a throughput, and never the first, which
    holds compilation and warm-up. Returns (record or None, what went wrong or "")."""
    log = logs / f"{script}.log"
    if not log.exists():
        return None, "not run"
    text = log.read_text(errors="replace")
    timed = [r for r in records(runs / script / "metrics.jsonl") if "tokens_per_s" in r]
    reason, ok = outcome(text)
    if len(timed) < 2:  # one interval: compilation and warm-up are in it, so it is no steady state
        return None, f"{reason}; {len(timed)} timed interval(s)"
    shape = re.search(r"^micro-batch: (.+)$", text, re.M)
    return {**timed[-1], "shape": shape.group(1) if shape else "—"}, "" if ok else f"{reason} after its steady state"


def fmt(value, kind):
    if value is None:
        return "—"
    return {"int": f"{value:,}", "pct": f"{value:.1%}", "ratio": f"{value:.2f}×"}[kind]


def verdict(script, run, bench):
    """The targets this script misses, or "met" when every measured one is met."""
    misses, measured = [], 0
    if run is not None:
        measured += 1
        if run.get("mfu") is not None and run["mfu"] < MFU_TARGET.get(script, 0):
            misses.append(f"MFU < {MFU_TARGET[script]:.0%}")
        if run.get("data_frac", 0) >= DATA_TARGET:
            misses.append(f"data ≥ {DATA_TARGET:.0%}")
    if bench is not None:
        measured += 1
        if bench["ratio"] < RATIO_TARGET:
            misses.append(f"ours/HF < {RATIO_TARGET}")
    return "; ".join(misses) or ("met" if measured == 2 else "not all measured")


def shortfall(script, run, bench):
    """How far the script is below its targets, for choosing which profile to print (0: on target)."""
    gaps = []
    if run is not None and run.get("mfu") is not None and script in MFU_TARGET:
        gaps.append(MFU_TARGET[script] / max(run["mfu"], 1e-9) - 1)
    if bench is not None:
        gaps.append(RATIO_TARGET / max(bench["ratio"], 1e-9) - 1)
    return max(gaps, default=0.0)


def main(argv):
    if len(argv) < 2:
        print("usage: " + __doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    out, runs, scripts = Path(argv[0]), Path(argv[1]), argv[2:] or SCRIPTS
    bench_rows, failed, bench_why = {}, {}, {}
    for path in sorted(out.glob("bench*.json"), key=lambda p: p.stat().st_mtime):  # one a bench slot; the last wins
        try:
            rows = json.loads(path.read_text()).get("results", [])
        except json.JSONDecodeError:
            rows = []
        for r in rows:
            failed.pop(r["model"], None)
            if "error" in r:
                failed[r["model"]] = r["error"]
            else:
                bench_rows[r["model"]] = r
    for log in sorted((out / "logs").glob("bench*.log")):  # logs/bench-roberta-albert.log: those models' slot
        named = log.stem.split("-")[1:] or SCRIPTS
        bench_why.update(dict.fromkeys(named, outcome(log.read_text(errors="replace"))[0]))
    head = ["script", "train batch × seq", "tok/s", "MFU", "data", "bench ours tok/s", "HF tok/s", "ours/HF",
            "bench ours MFU", "targets"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    notes, gaps = [], {}
    for script in scripts:
        run, why = training_run(out / "logs", runs, script)
        b = bench_rows.get(script)
        if why:
            notes.append(f"{script}.py training: {why}")
        if b is None:
            notes.append(f"{script}.py bench: {failed.get(script, bench_why.get(script, 'not run'))}")
        lines.append("| " + " | ".join([
            f"{script}.py", run["shape"] if run else "—", fmt(run and run["tokens_per_s"], "int"),
            fmt(run and run.get("mfu"), "pct"),
            fmt(run and run.get("data_frac"), "pct"), fmt(b and b["ours"]["tokens_per_s"], "int"),
            fmt(b and b["hf"]["tokens_per_s"], "int"), fmt(b and b["ratio"], "ratio"),
            fmt(b and b["ours"].get("mfu"), "pct"), verdict(script, run, b)]) + " |")
        gaps[script] = shortfall(script, run, b)
    meta = (out / "meta.txt").read_text().strip().splitlines() if (out / "meta.txt").exists() else []
    text = "\n".join(meta + [""] + lines + [f"- {n}" for n in notes]) + "\n"
    (out / "table.md").write_text(text)
    print(text, end="")
    profiles = "".join(p.read_text() for p in sorted(out.glob("profile*.txt")))
    worst = max(gaps, key=gaps.get, default=None)
    if worst and gaps[worst] > 0 and profiles:
        sections = re.split(r"^(?===)", profiles, flags=re.M)
        found = [s for s in sections if s.startswith(f"== {worst},")]
        if found:
            print(f"\nThe furthest below a target ({worst}.py): its costliest operations in bench.py\n{found[0]}",
                  end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
