"""bench.py runs: every model against its Hugging Face counterpart of the same size, a table, a JSON file."""

import json
import sys
from pathlib import Path

import pytest

import bench


def test_bench_runs_every_model_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--size", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == bench.MODELS
    for r in report["results"]:
        assert r["params"] == r["hf_params"]  # the reference is built with the same config
        assert r["ours"]["tokens_per_s"] > 0 and r["hf"]["tokens_per_s"] > 0 and r["ratio"] > 0
        assert r["ours"]["mfu"] is None and r["ours"]["peak_memory_mb"] is None  # CUDA only
    table = capsys.readouterr().out
    assert "| model | params | batch × seq | ours tok/s | HF tok/s | ours/HF |" in table
    assert all(f"| {m} |" in table for m in bench.MODELS)


@pytest.mark.parametrize("argv, message", [
    (["--models", "gpt,t5"], "error: --models: unknown t5"),
    (["--seq-len", "0"], "error: --seq-len must be positive"),
    (["--models", "bert", "--seq-len", "4096"], "error: --seq-len 4096 is longer than bert's 128 positions"),
    (["--warmup", "-5"], "error: --warmup must be 0 or more"),
    (["--size", "huge"], "error: --size 'huge' is unknown"),
    (["--json", "{tmp}"], "error: --json {tmp}: cannot write a file there"),
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
