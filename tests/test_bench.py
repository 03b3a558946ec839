"""bench.py runs: every model against its Hugging Face counterpart of the same size, a table, a JSON file and
profiles; benchmarks/gpu_check.sh and its table, run on the CPU (GPU_CHECK_SMOKE)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench


def test_bench_runs_every_model_and_writes_json(tmp_path, capsys):
    out, profile = tmp_path / "bench.json", tmp_path / "profile.txt"
    assert bench.main(["--device", "cpu", "--size", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out),
                       "--profile", str(profile)]) == 0
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == bench.MODELS
    for r in report["results"]:
        assert r["params"] == r["hf_params"]  # the reference is built with the same config
        assert r["ours"]["tokens_per_s"] > 0 and r["hf"]["tokens_per_s"] > 0 and r["ratio"] > 0
        assert r["ours"]["mfu"] is None and r["ours"]["peak_memory_mb"] is None  # CUDA only
    table = capsys.readouterr().out
    assert "| model | params | batch × seq | ours tok/s | HF tok/s | ours/HF |" in table
    assert all(f"| {m} |" in table for m in bench.MODELS)
    sections = profile.read_text().split("\n== ")
    assert [s.split(",")[0].lstrip("= ") for s in sections] == bench.MODELS  # one profile of ours per model
    assert all("aten::" in s and "Self CPU time total" in s for s in sections)


@pytest.mark.parametrize("argv, message", [
    (["--models", "gpt,t5"], "error: --models: unknown t5"),
    (["--seq-len", "0"], "error: --seq-len must be positive"),
    (["--models", "bert", "--seq-len", "4096"], "error: --seq-len 4096 is longer than bert's 128 positions"),
    (["--warmup", "-5"], "error: --warmup must be 0 or more"),
    (["--size", "huge"], "error: --size 'huge' is unknown"),
    (["--json", "{tmp}"], "error: --json {tmp}: cannot write a file there"),
    (["--profile", "{tmp}"], "error: --profile {tmp}: cannot write a file there"),
])
def test_bad_input_gives_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    if "4096" not in argv:  # every other check comes before any model is built
        monkeypatch.setattr(bench, "bench_one", lambda *a: pytest.fail("benchmarked before checking the arguments"))
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cpu", "--json", str(tmp_path / "b.json"), *[a.format(tmp=tmp_path) for a in argv]])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("spec, message", [("bert:huge", "error: bert:huge: bert.py has no size 'huge'"),
                                           ("t5:base", "error: t5:base: unknown script 't5'")])
def test_memory_benchmark_refuses_a_bad_spec_in_one_line(spec, message, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import memory

    with pytest.raises(SystemExit) as e:
        memory.main([spec])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count("\n") == 1


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_table  # noqa: E402


def test_gpu_check_runs_its_stages_and_prints_one_table(tmp_path):
    """The whole GPU check on the CPU (GPU_CHECK_SMOKE: tiny size, a few steps): data, training run, bench.py with
    its profile, then the table with the run's throughput and data share and the bench row, and what comes back."""
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"),
           "PYTHON": sys.executable}  # the suite's interpreter, not whichever `python` PATH finds
    done = subprocess.run(["bash", ROOT / "benchmarks" / "gpu_check.sh", "bert"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| bert.py |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8 × 128" and all(c != "—" for c in cells[2:3] + cells[4:8]), row  # MFU: CUDA only
    assert float(cells[4].rstrip("%")) < 100 and cells[7].endswith("×")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.log", "meta.txt",
                                                                     "profile.txt", "table.md", "train.log"]
    assert row in (tmp_path / "out" / "table.md").read_text()
    assert "rc=0" in (tmp_path / "out" / "train.log").read_text()


def test_gpu_table_names_each_missed_target_and_each_missing_stage(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    steady = {"step": 200, "tokens_per_s": 500_000, "mfu": 0.5, "data_frac": 0.01}
    for script, rows, log in [
        ("gpt", [{"step": 100, "tokens_per_s": 1}, {"step": 200, "tokens_per_s": 400_000, "mfu": 0.40,
                                                    "data_frac": 0.06}], "compiling the model\nrc=0 wall=50s"),
        ("bert", [{"step": 100, "tokens_per_s": 1}, {**steady, "tokens_per_s": 600_000, "mfu": 0.46}],
         "compiling the model\nrc=0 wall=50s"),
        ("roberta", [{"step": 100, "tokens_per_s": 1}], "compiling the model\nrc=124 wall=240s"),  # stopped
        ("electra", [{"step": 100, "tokens_per_s": 1}, steady],  # failed after its steady state: numbers kept
         "compiling the model\nTraceback (most recent call last):\n  File x\n"
         "torch.OutOfMemoryError: CUDA out of memory.\nrc=1 wall=80s"),
    ]:
        (runs / script).mkdir(parents=True)
        lines = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 210, "tok'  # a line cut short by a kill
        (runs / script / "metrics.jsonl").write_text(lines)
        (runs / f"{script}.log").write_text(f"micro-batch: 64 × 512\n{log}\n")
    out.mkdir()
    bench_row = {"ours": {"tokens_per_s": 2, "mfu": 0.5}, "hf": {"tokens_per_s": 1, "mfu": 0.3}}
    (out / "bench.json").write_text(json.dumps({"results": [{"model": "gpt", **bench_row, "ratio": 1.2},
                                                            {"model": "bert", **bench_row, "ratio": 1.5}]}))
    (out / "bench.log").write_text("Traceback (most recent call last):\n  File x\n    raise\n"
                                   "torch._dynamo.exc.BackendCompilerFailed: boom\nrc=124\n")
    (out / "profile.txt").write_text("== gpt, ours: 32 x 512\nthe gpt table\n== bert, ours: 32 x 512\nthe bert table\n")
    assert gpu_table.main([str(out), str(runs), "gpt", "bert", "roberta", "albert", "electra"]) == 0
    table = (out / "table.md").read_text()
    misses = "MFU < 45%; data ≥ 5%; ours/HF < 1.3"
    assert f"| gpt.py | 64 × 512 | 400,000 | 40.0% | 6.0% | 2 | 1 | 1.20× | 50.0% | {misses} |" in table
    assert "| bert.py | 64 × 512 | 600,000 | 46.0% | 1.0% |" in table and table.count("| met |") == 1
    assert "- roberta.py training: rc=124 wall=240s; 1 timed interval(s)" in table  # its one interval: compilation
    assert "- albert.py training: not run" in table
    assert "- albert.py bench: rc=124; torch._dynamo.exc.BackendCompilerFailed: boom" in table
    assert "| electra.py | 64 × 512 | 500,000 | 50.0% | 1.0% |" in table
    assert "- electra.py training: rc=1 wall=80s; torch.OutOfMemoryError: CUDA out of memory. after its" in table
    printed = capsys.readouterr().out
    assert printed.startswith(table) and "(gpt.py)" in printed and "the gpt table" in printed  # the worst's profile
    assert "the bert table" not in printed


@pytest.mark.parametrize("name", bench.MODELS)
def test_every_models_loss_traces_into_one_graph(name):
    """torch.compile sees each model's forward and loss as one graph: no graph break, which on a GPU means a
    host synchronisation and unfused kernels at every step (the H200 run found one in the padding mask once)."""
    import importlib

    import torch

    module = importlib.import_module(name)
    cfg = module.PRESETS["tiny"]
    model = module.Model(cfg).train()
    batch = bench.make_batch(name, cfg, 2, torch.device("cpu"))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda b: module.compute_loss(model, b, cfg)[0])(batch)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("name", bench.MODELS)
def test_flops_per_token_are_the_models_own_matrix_products(name):
    """MFU's count, per token: 3 × the forward's matrix products (backward = 2 × forward), as torch's counter
    measures them in a pretraining step's forward and loss (table lookups are no products; a decoder counts where
    it predicts), plus 12·L·H·T for attention (left out of both sides: the CPU's attention kernel is not counted)."""
    import dataclasses
    import importlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = importlib.import_module(name)
    cfg = module.PRESETS["tiny"]
    if name != "gpt":  # every masked slot filled, as in training batches
        cfg = dataclasses.replace(cfg, max_predictions=round(0.15 * cfg.seq_len))
    model = module.Model(cfg).train()
    batch = bench.make_batch(name, cfg, 2, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        module.compute_loss(model, batch, cfg)
    products = sum(f for op, f in counter.get_flop_counts()["Global"].items() if "mm" in str(op))
    attention = 12 * cfg.layers * (cfg.hidden + getattr(cfg, "gen_hidden", 0)) * cfg.seq_len
    measured = 3 * products / (2 * cfg.seq_len)
    assert module.flops_per_token(model, cfg) - attention == pytest.approx(measured, rel=0.015)  # LN, biases
