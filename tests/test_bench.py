"""bench.py runs: every model against its Hugging Face counterpart of the same size, a table, a JSON file."""

import json

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
])
def test_bad_input_gives_one_clear_line(argv, message, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cpu", "--json", str(tmp_path / "b.json"), *argv])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "b.json").exists()
