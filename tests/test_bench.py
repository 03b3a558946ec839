"""bench.py runs: every model against its Hugging Face counterpart of the same size, a table, a JSON file and
profiles; benchmarks/gpu_check.sh and its table, run on the CPU (GPU_CHECK_SMOKE)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_bench_survives_a_model_that_raises(tmp_path, capsys, monkeypatch):
    """A model that fails (here roberta with 3 heads for a width of 128, which neither implementation can split)
    is its row's error, in the table and the JSON; the models after it still run, and the exit status says so."""
    import dataclasses

    import roberta

    monkeypatch.setitem(roberta.PRESETS, "tiny", dataclasses.replace(roberta.PRESETS["tiny"], heads=3))
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--models", "gpt,roberta,bert", "--steps", "1", "--warmup", "0",
                       "--json", str(out)]) == 1
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["gpt", "roberta", "bert"]
    assert "error" in rows[1] and "ratio" not in rows[1] and rows[0]["ratio"] > 0 and rows[2]["ratio"] > 0
    assert "| roberta | failed: " in capsys.readouterr().out


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_the_reference_loss_is_the_hugging_face_models_own(name):
    """bench.py runs the reference's vocabulary projection at the masked positions only, as ours: its loss is still
    the one the Hugging Face pretraining class computes over every position with the others labelled -100."""
    import importlib

    cfg = importlib.import_module(name).PRESETS["tiny"]
    model, loss = bench.reference(name, cfg)
    model.eval()
    batch = bench.make_batch(name, cfg, 3, "cpu")
    labels = torch.full_like(batch["input_ids"], -100).scatter(1, batch["mlm_positions"], batch["mlm_labels"])
    extra = {"bert": {"next_sentence_label": batch.get("pair_labels")},
             "albert": {"sentence_order_label": batch.get("pair_labels")}}.get(name, {})
    args = [batch["input_ids"], batch["attention_mask"]] + [batch.get("token_type_ids")] * (name != "roberta")
    with torch.no_grad():
        assert torch.allclose(loss(batch), model(*args, labels=labels, **extra).loss, atol=1e-5)


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


def gpu_check(tmp_path, *scripts, **env):
    return subprocess.run(["bash", ROOT / "benchmarks" / "gpu_check.sh", *scripts], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"),
                                            "PYTHON": sys.executable, **env})  # the suite's interpreter


def test_gpu_check_runs_its_stages_and_prints_one_table(tmp_path):
    """The GPU check on the CPU (GPU_CHECK_SMOKE=1: tiny size, 4 compiled steps, a log line every 2): the training
    stage, then bench.py as a second stage into the same folder, then one table. Its tokens/s is the second timed
    interval's, never the first, which holds the compilation."""
    done = gpu_check(tmp_path, "bert", GPU_CHECK_SMOKE="1")
    assert done.returncode == 0, done.stderr[-2000:]
    timed = [r for r in map(json.loads, (tmp_path / "runs" / "bert" / "metrics.jsonl").read_text().splitlines())
             if "tokens_per_s" in r]
    assert len(timed) == 2 and timed[0]["tokens_per_s"] < timed[1]["tokens_per_s"]  # compiling, then compiled
    done = gpu_check(tmp_path, "bert", GPU_CHECK_SMOKE="1", GPU_CHECK_STAGES="bench")
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| bert.py |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8 × 128" and cells[2] == f"{timed[1]['tokens_per_s']:,}", row
    assert all(c != "—" for c in cells[4:8]) and cells[3] == "—" and cells[7].endswith("×")  # MFU: CUDA only
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bench-bert.json", "logs", "meta.txt", "plan.env", "plan.txt",
                                                     "profile-bench-bert.txt", "table.md"]
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["bench-bert.log", "bert.log", "bert.metrics.jsonl",
                                                              "bert.prepare.log"]
    assert row in (out / "table.md").read_text() and "rc=0" in (out / "logs" / "bert.log").read_text()
    assert (out / "meta.txt").read_text().startswith(f"imports: {sys.executable}: all found")
    done = gpu_check(tmp_path, "bert", GPU_CHECK_SMOKE="1")  # a rerun on the warm machine: the data is kept
    assert done.returncode == 0 and "training the tokenizer" not in (out / "logs" / "bert.prepare.log").read_text()
    assert "bench ours" in done.stdout and row.split("|")[6] in done.stdout  # the bench row still in the table


@pytest.mark.parametrize("stage", ["train", "bench", "compare"])
def test_each_gpu_check_prints_a_plan_that_fits_its_window(stage, tmp_path):
    """GPU_CHECK_DRY=1 prints the plan for one H100 without a GPU and stops: each stage's estimate, never-run
    scripts first, and `plan: N s in all` with N <= 420; what does not fit is named with its command."""
    done = gpu_check(tmp_path, GPU_CHECK_DRY="1", GPU_CHECK_STAGES=stage)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    total = int(re.fullmatch(r"plan: (\d+) s in all", lines[-1]).group(1))
    steps = [int(line.split()[0]) for line in lines[1:-1] if re.match(r" +\d+ s ", line)]
    assert total == sum(steps) <= 420
    scripts = [m.group(1) or m.group(2) for m in (re.search(r"(\w+)\.py --train|bench\.py (\w+):", line)
                                                  for line in lines) if m]
    assert scripts == ["roberta", "albert", "electra", "gpt", "bert"][:len(scripts)]
    if stage == "train":
        assert len(scripts) == 5
    if stage == "bench":  # ten cold compiles do not fit one window: the rest is named, with its command
        assert any("GPU_CHECK_STAGES=bench bash benchmarks/gpu_check.sh" in line for line in lines)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_gpu_table_names_each_missed_target_and_each_missing_stage(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    steady = {"step": 200, "tokens_per_s": 500_000, "mfu": 0.5, "data_frac": 0.01}
    for script, rows, log in [
        ("gpt", [{"step": 100, "tokens_per_s": 1}, {"step": 200, "tokens_per_s": 400_000, "mfu": 0.40,
                                                    "data_frac": 0.06}], "rc=0 wall=50s"),
        ("bert", [{"step": 100, "tokens_per_s": 1}, {**steady, "tokens_per_s": 600_000, "mfu": 0.46}],
         "rc=0 wall=50s"),
        ("roberta", [{"step": 100, "tokens_per_s": 1}], "rc=124 wall=240s"),  # stopped
        ("electra", [{"step": 100, "tokens_per_s": 1}, steady],  # failed after its steady state: numbers kept
         "Traceback (most recent call last):\n  File x\n"
         "torch.OutOfMemoryError: CUDA out of memory.\nrc=1 wall=80s"),
    ]:
        (runs / script).mkdir(parents=True)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 210, "tok'  # a line cut short by a kill
        (runs / script / "metrics.jsonl").write_text(lines)
        (out / "logs" / f"{script}.log").write_text(f"micro-batch: 64 × 512\n{log}\n")
    bench_row = {"ours": {"tokens_per_s": 2, "mfu": 0.5}, "hf": {"tokens_per_s": 1, "mfu": 0.3}}
    (out / "bench.json").write_text(json.dumps({"results": [{"model": "gpt", **bench_row, "ratio": 1.2},
                                                            {"model": "bert", **bench_row, "ratio": 1.5}]}))
    (out / "logs" / "bench.log").write_text("Traceback (most recent call last):\n  File x\n    raise\n"
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
