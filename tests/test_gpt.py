"""gpt.py: parity with Hugging Face, the paper's size, causality, and the training plumbing every script shares."""

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt
from conftest import ROOT, run_script, training_documents


def tiny(**changes):
    return dataclasses.replace(gpt.PRESETS["tiny"], **changes)


TRAIN_TOKENIZER = gpt.get_tokenizer  # the script's own, for the tests that train one


@pytest.fixture(autouse=True)
def shared_tokenizer(gpt_tokenizer, monkeypatch):
    """Runs in this module start from one tokenizer (see conftest.gpt_tokenizer)."""
    real = gpt.get_tokenizer

    def get_tokenizer(out, docs, cfg):
        if not (Path(out) / "tokenizer.json").exists() and cfg.vocab_size == gpt.PRESETS["tiny"].vocab_size:
            shutil.copy(gpt_tokenizer, Path(out) / "tokenizer.json")
        return real(out, docs, cfg)

    monkeypatch.setattr(gpt, "get_tokenizer", get_tokenizer)


def train_args(out, corpus, *extra):
    return gpt.build_parser().parse_args(["--train", "--size", "tiny", "--device", "cpu", "--out", str(out),
                                          "--data", str(corpus), *map(str, extra)])


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- the model against the reference ---


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    hf = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=99, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                              attn_implementation="eager")).eval()
    path = tmp_path_factory.mktemp("openai-gpt")
    hf.save_pretrained(path)
    return hf, path


@pytest.mark.floats
def test_parity_with_hugging_face(reference):
    hf, path = reference
    ours = gpt.Model.from_pretrained(path).eval()
    ids = torch.randint(0, 99, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours.encode(ids, mask)
        logits, _ = ours(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=0)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


@pytest.mark.floats
def test_parity_from_pytorch_model_bin(reference, tmp_path):
    hf, path = reference
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save({"transformer." + k: v for k, v in hf.transformer.state_dict().items()}, tmp_path / "pytorch_model.bin")
    ours = gpt.Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 99, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], hf(ids).logits, atol=1e-5, rtol=0)


def test_tokenizer_files_of_the_openai_gpt_layout(corpus, tmp_path):
    tok = gpt.train_tokenizer(gpt.read_corpus(str(corpus)), tiny())
    tok.model.save(str(tmp_path))  # vocab.json + merges.txt, as the openai-gpt release
    loaded = gpt.load_tokenizer(tmp_path)
    text = "The Python Interpreter raises an exception."
    assert loaded.encode(text).ids == tok.encode(text).ids
    assert tok.decode(tok.encode(text).ids) == "the python interpreter raises an exception ."  # words, as GPT-1


def test_base_preset_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = gpt.Model(gpt.PRESETS["base"])
    assert model.num_params() == 116_534_784
    assert model.head.weight is model.embeddings.tokens.weight


@pytest.mark.floats
def test_no_causal_leak():
    model = gpt.Model(tiny()).eval()
    ids = torch.randint(0, 4096, (1, 16))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 4096
    with torch.no_grad():
        a, b = model(ids)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :9], b[:, :9], atol=0, rtol=0)
    assert not torch.allclose(a[:, 9], b[:, 9])


@pytest.mark.floats
def test_right_padding_leaves_real_positions_unchanged():
    model = gpt.Model(tiny()).eval()
    ids = torch.randint(0, 4096, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 8 + [0] * 4])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(padded, mask)[:, :8], model.encode(ids), atol=1e-6, rtol=0)
        left = model.encode(padded.flip(1), mask.flip(1))  # left padding: the first rows see no real token
    assert torch.isfinite(left).all()


def test_dropout_is_off_in_eval_and_on_in_training():
    model = gpt.Model(tiny(dropout=0.1))
    ids = torch.randint(0, 4096, (2, 16))
    model.train()
    assert not torch.equal(model.encode(ids), model.encode(ids))
    model.eval()
    assert torch.equal(model.encode(ids), model.encode(ids))


def test_evaluation_is_deterministic(corpus, tmp_path):
    cfg = tiny(dropout=0.1, eval_examples=16, batch_size=4)
    docs = gpt.read_corpus(str(corpus))
    tok = gpt.get_tokenizer(tmp_path, docs, cfg)
    data = gpt.load_data(docs, tok, tmp_path, cfg)
    rt = gpt.setup_runtime(gpt.build_parser().parse_args(["--device", "cpu"]))
    model = gpt.Model(cfg)
    assert gpt.evaluate(model, data, 1, cfg, rt) == gpt.evaluate(model, data, 1, cfg, rt)
    assert model.training  # evaluate() puts the model back into training mode


def test_learning_rate_schedule():
    cfg = tiny(lr=1e-3, warmup=10, steps=110)
    assert gpt.get_lr(0, cfg) == pytest.approx(1e-4)  # never 0 at step 0
    assert gpt.get_lr(9, cfg) == pytest.approx(1e-3)  # peak at the end of warmup
    assert gpt.get_lr(60, cfg) == pytest.approx(5e-4)  # cosine: half way down at half of the decay
    assert gpt.get_lr(110, cfg) == pytest.approx(0.0)
    assert gpt.get_lr(60, dataclasses.replace(cfg, schedule="linear")) == pytest.approx(5e-4)
    assert gpt.get_lr(35, dataclasses.replace(cfg, schedule="linear")) == pytest.approx(7.5e-4)


def test_hashed_random_numbers_are_uniform_and_keyed():
    u = gpt.uniform(0, np.arange(2000), 64, 0)
    assert u.shape == (2000, 64) and 0 <= u.min() and u.max() < 1
    assert u.mean() == pytest.approx(0.5, abs=0.005) and u.std() == pytest.approx(12 ** -0.5, abs=0.005)
    assert np.array_equal(gpt.uniform(0, [7, 3], 64, 0), u[[7, 3]])  # a key's numbers do not depend on the batch
    assert not np.array_equal(gpt.uniform(1, [7], 64, 0), u[[7]])  # another seed
    assert not np.array_equal(gpt.uniform(0, [7], 64, 1), u[[7]])  # another stream


def test_windows_are_inputs_shifted_by_one():
    data = {"tokens": torch.arange(1000).numpy()}
    batch = gpt.get_batch(data, [0, 1, 2], 0, tiny(seq_len=16))
    assert torch.equal(batch["targets"][:, :-1], batch["input_ids"][:, 1:])
    assert torch.equal(batch["targets"], batch["input_ids"] + 1)
    assert torch.equal(gpt.get_batch(data, [1], 0, tiny(seq_len=16))["input_ids"][0], batch["input_ids"][1])


# --- training ---


def test_tiny_run_lowers_validation_loss(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gpt.PRESETS, "tiny", tiny(eval_interval=40, log_interval=10, warmup=10, eval_examples=32))
    gpt.train(train_args(tmp_path, corpus, "--steps", 40, "--batch-size", 3))
    rows = metrics(tmp_path)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == 40
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 1.0
    assert {"loss", "lr", "tokens_per_s"} <= rows[-1].keys()
    assert [r["tokens"] for r in rows] == [r["step"] * 3 * gpt.PRESETS["tiny"].seq_len for r in rows]  # plot.py's x
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"the curves: python plot.py {tmp_path}")


@pytest.mark.floats
def test_resume_continues_exactly(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(gpt.PRESETS, "tiny",
                        tiny(eval_interval=4, log_interval=1, eval_examples=16, warmup=3, dropout=0.1))
    gpt.train(train_args(tmp_path / "straight", corpus, "--steps", 8))

    save = gpt.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state["step"] == 4:
            raise KeyboardInterrupt  # killed right after the checkpoint at step 4

    monkeypatch.setattr(gpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        gpt.train(train_args(tmp_path / "resumed", corpus, "--steps", 8))
    monkeypatch.setattr(gpt, "save_checkpoint", save)
    gpt.train(train_args(tmp_path / "resumed", corpus, "--steps", 8, "--resume"))

    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == list(range(9))
    for a, b in zip(straight, resumed):
        for k in ("loss", "lr", "val_loss"):
            assert a.get(k) == pytest.approx(b.get(k), abs=1e-6), (a["step"], k)


@pytest.mark.floats
def test_accumulation_equals_one_big_batch(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(gpt.PRESETS, "tiny", tiny(eval_interval=3, log_interval=1, eval_examples=16))
    exact = ("--dtype", "fp32")  # equal to 1e-5: in fp32 (bf16 rounds the two sums differently)
    one = gpt.train(train_args(tmp_path / "one", corpus, "--steps", 3, "--batch-size", 8, *exact))
    acc = gpt.train(train_args(tmp_path / "acc", corpus, "--steps", 3, "--batch-size", 2, "--grad-accum", 4, *exact))
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "acc")):
        assert a.get("loss") == pytest.approx(b.get("loss"), abs=1e-5)
    for p, q in zip(one.parameters(), acc.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


@pytest.mark.floats
def test_torchrun_two_processes_equal_one_process(corpus, gpt_tokenizer, tmp_path):
    for run in ("ddp", "single"):
        (tmp_path / run).mkdir()
        shutil.copy(gpt_tokenizer, tmp_path / run / "tokenizer.json")
    common = ["--train", "--size", "tiny", "--device", "cpu", "--steps", "4", "--data", corpus, "--max-new-tokens", "2",
              "--dtype", "fp32"]  # equal to 1e-5: in fp32 (bf16 rounds the two sums differently)
    ddp = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ROOT / "gpt.py", *common,
                     "--batch-size", "4", "--out", tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = run_script(ROOT / "gpt.py", *common, "--batch-size", "8", "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = metrics(tmp_path / "ddp")[-1], metrics(tmp_path / "single")[-1]
    assert a["step"] == b["step"] == 4
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)  # averaged over both ranks
    ddp_weights = gpt.load_checkpoint(tmp_path / "ddp" / "ckpt.pt")["model"]
    for k, v in gpt.load_checkpoint(tmp_path / "single" / "ckpt.pt")["model"].items():
        torch.testing.assert_close(ddp_weights[k], v, atol=1e-5, rtol=1e-4)


def test_micro_batches_and_the_prefetching_thread(corpus, gpt_tokenizer, tmp_path):
    """Each process's micro-batches, from a resumed step to the last one, hold the ids of its slice of each global
    batch; the thread that builds them ahead gives exactly the batches get_batch builds, in the same order, and an
    error met while building reaches the loop."""
    cfg = tiny(batch_size=3, grad_accum=2, steps=5)
    ids = list(gpt.micro_batch_ids(2, 100, cfg, rank=1, world=2))  # steps 2, 3, 4; 12 examples a step
    expected = [100 + step * 12 + (micro * 2 + 1) * 3 + np.arange(3) for step in range(3) for micro in range(2)]
    assert len(ids) == len(expected) and all(np.array_equal(a, b) for a, b in zip(ids, expected))
    shutil.copy(gpt_tokenizer, tmp_path / "tokenizer.json")
    tokenizer = gpt.load_tokenizer(tmp_path)
    data = gpt.load_data(gpt.read_corpus(str(corpus)), tokenizer, tmp_path, cfg)["train"]
    built = list(gpt.training_batches(data, iter(ids), 5, cfg, ahead=2, device=torch.device("cpu")))
    assert len(built) == len(ids)
    for got, i in zip(built, ids):
        for k, v in gpt.get_batch(data, i, 5, cfg).items():
            assert torch.equal(got[k], v), k
    cpu = torch.device("cpu")
    broken = gpt.training_batches(data, iter([ids[0], None]), 5, cfg, ahead=2, device=cpu)  # None: not ids
    assert torch.equal(next(broken)["input_ids"], built[0]["input_ids"])
    with pytest.raises(TypeError):
        next(broken)
    stopped = gpt.training_batches(data, iter(ids * 10), 5, cfg, ahead=2, device=cpu)
    next(stopped)
    time.sleep(0.5)  # the thread fills the queue and waits to put one more
    stopped.close()  # the loop stopped early (an error, Ctrl-C): the thread must not wait on a full queue forever
    deadline = time.time() + 10
    while any(t.name.startswith("prefetch") for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("prefetch") for t in threading.enumerate())


def test_nan_loss_stops_the_run_with_a_clear_message(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(gpt.PRESETS, "tiny", tiny(eval_interval=2, log_interval=1, eval_examples=8))
    real = gpt.compute_loss
    calls = []

    def poisoned(model, batch, cfg):
        loss, m = real(model, batch, cfg)
        calls.append(model.training)
        return (loss * float("nan") if sum(calls) >= 3 else loss), m  # from the third training step on

    monkeypatch.setattr(gpt, "compute_loss", poisoned)
    with pytest.raises(gpt.UserError, match="loss became nan at step 3"):
        gpt.train(train_args(tmp_path, corpus, "--steps", 6))
    assert gpt.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 2  # the NaN state was never saved


def test_bf16_autocast_and_compile_train(corpus, tmp_path):
    gpt.train(train_args(tmp_path / "bf16", corpus, "--steps", 2, "--dtype", "bf16", "--batch-size", 2))
    assert metrics(tmp_path / "bf16")[-1]["step"] == 2
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    gpt.train(train_args(tmp_path / "compiled", corpus, "--steps", 3, "--compile", "--batch-size", 2, "--prefetch", 2))
    assert counters["stats"]["unique_graphs"] == 1  # compiled once for every step: no recompilation
    state = gpt.load_checkpoint(tmp_path / "compiled" / "ckpt.pt")
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])


@pytest.mark.floats
def test_the_compiled_loss_is_the_plain_one_in_one_graph_and_equals_the_blocked_loss():
    """Compiled, GPT-1's loss is F.cross_entropy, not LMLoss's loop unrolled (at 2,048 x 40,478 that compiled
    3x slower and ran 1.6x slower: benchmarks/RESULTS.md): one graph for 5 x 128 = 640 rows, with the eager blocked
    loss's value and gradients."""
    from torch._dynamo.utils import counters

    cfg = gpt.PRESETS["tiny"]
    torch.manual_seed(0)
    model = gpt.Model(cfg)
    ids, targets = torch.randint(0, cfg.vocab_size, (2, 5, 128))
    grads = []
    for run in (model, torch.compile(model)):
        torch._dynamo.reset()
        counters.clear()
        model.zero_grad()
        _, loss = run(ids, targets)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    (eager, eager_grads), (compiled, compiled_grads) = grads
    assert torch.allclose(eager, compiled, rtol=1e-5, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(eager_grads, compiled_grads))
    with torch.no_grad():  # and the eager loss is the blocked one: the same as the plain loss
        logits, blocked = model(ids, targets)
        assert torch.allclose(blocked, torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()),
                              rtol=1e-5, atol=1e-5)


def test_auto_is_bf16_on_a_cpu_that_computes_it_natively_and_fp32_elsewhere():
    native = "AVX512" in torch.backends.cpu.get_cpu_capability() and torch.cpu._is_avx512_bf16_supported()
    auto = gpt.setup_runtime(gpt.build_parser().parse_args(["--device", "cpu"]))
    assert auto.dtype == ("bf16" if native else "fp32") and auto.amp.fast_dtype == torch.bfloat16
    assert auto.amp._enabled == native
    # ATen's AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, or a CPU without AVX-512): no native bf16, so fp32
    code = "import gpt; print(gpt.setup_runtime(gpt.build_parser().parse_args(['--device', 'cpu'])).dtype)"
    assert run_script("-c", code, env={"ATEN_CPU_CAPABILITY": "avx2"}).stdout.split() == ["fp32"]
    forced = gpt.setup_runtime(gpt.build_parser().parse_args(["--device", "cpu", "--dtype", "fp32"]))
    assert forced.dtype == "fp32" and not forced.amp._enabled


@pytest.mark.floats
def test_the_chunked_loss_is_the_plain_cross_entropy_in_value_and_gradient():
    torch.manual_seed(0)
    for dtype, tolerance in ((torch.float32, 1e-7), (torch.bfloat16, 1e-5)):
        logits = (torch.randn(600, 77) * 3).to(dtype).requires_grad_()  # 600 rows: two whole blocks and a part
        targets = torch.randint(0, 77, (600,))
        targets[::7] = -100  # positions that predict nothing
        plain = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100)
        plain.backward()
        expected, logits.grad = logits.grad, None
        ours = gpt.LMLoss.apply(logits, targets)
        ours.backward()
        assert ours.item() == pytest.approx(plain.item(), rel=1e-6) and logits.grad.dtype == dtype
        torch.testing.assert_close(logits.grad.float(), expected.float(), atol=tolerance, rtol=0)
        assert not logits.grad[::7].any()  # an ignored position gets no gradient


@pytest.mark.floats
def test_bf16_autocast_on_a_cpu_gives_the_fp32_model_s_outputs():
    torch.manual_seed(0)
    model = gpt.Model(tiny(dropout=0.0)).eval()
    ids = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        fp32, loss32 = model(ids[:, :-1], ids[:, 1:])
        with torch.autocast("cpu", torch.bfloat16):
            bf16, loss16 = model(ids[:, :-1], ids[:, 1:])  # attention in fp32 inside, the products in bf16
    assert bf16.dtype == torch.bfloat16 and abs(loss16.item() - loss32.item()) < 0.02
    assert (bf16.float() - fp32).abs().max() < 0.1 * fp32.abs().max()


@pytest.mark.gpu
def test_cuda_training_in_bf16_and_fp16(corpus, tmp_path):
    for dtype in ("bf16", "fp16"):
        model = gpt.train(train_args(tmp_path / dtype, corpus, "--steps", 4, "--device", "cuda", "--dtype", dtype))
        assert next(model.parameters()).is_cuda
        assert metrics(tmp_path / dtype)[-1]["val_loss"] < metrics(tmp_path / dtype)[0]["val_loss"]


# --- demo and command line ---


def test_sampling_is_reproducible_with_a_seed(corpus, tmp_path, capsys):
    gpt.train(train_args(tmp_path, corpus, "--steps", 2))
    argv = ["--out", str(tmp_path), "--sample", "the module", "--max-new-tokens", "12"]
    outputs = []
    for seed in (1, 1, 2):
        capsys.readouterr()
        assert gpt.run(gpt.main, argv + ["--seed", str(seed)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].startswith("sample: the module")


def test_train_from_pretrained(reference, corpus, gpt_tokenizer, tmp_path):
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    _, short = reference  # 24 positions: too short for the tiny preset's 128-token windows
    with pytest.raises(gpt.UserError, match="128 long"):
        gpt.train(train_args(tmp_path / "short", corpus, "--steps", 2, "--from-pretrained", short))
    reference = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=4096, n_positions=128, n_embd=32, n_layer=1, n_head=2))
    reference.save_pretrained(tmp_path / "pre")
    shutil.copy(gpt_tokenizer, tmp_path / "pre" / "tokenizer.json")
    model = gpt.train(train_args(tmp_path / "run", corpus, "--steps", 2, "--from-pretrained", tmp_path / "pre"))
    assert (model.cfg.hidden, model.cfg.layers, model.cfg.steps) == (32, 1, 2)  # its architecture, our settings
    assert (tmp_path / "run" / "tokenizer.json").read_text() == gpt_tokenizer.read_text()
    assert metrics(tmp_path / "run")[-1]["step"] == 2


def test_help_lists_every_option():
    out = run_script(ROOT / "gpt.py", "--help")
    assert out.returncode == 0
    for flag in ("--train", "--size", "--data", "--out", "--steps", "--batch-size", "--grad-accum", "--lr", "--device",
                 "--dtype", "--compile", "--resume", "--seed", "--from-pretrained", "--sample", "--temperature",
                 "--top-k", "--prefetch", "--prepare-only", "--keep"):
        assert flag in out.stdout
    text = " ".join(out.stdout.split())  # argparse wraps the help at the terminal's width
    assert "(default: 0)" in text and "(default: runs/gpt)" in text  # --seed, --out


ENTRY_POINTS = ["gpt.py", "bert.py", "roberta.py", "albert.py", "electra.py", "bench.py", "compare.py", "finetune.py",
                "plot.py", "docs/site.py"] + [f"benchmarks/{p.name}" for p in sorted((ROOT / "benchmarks").glob("*.py"))
                              if "argparse" in p.read_text()]  # gpu_table.py takes two folders, no options


def parser_of(path, monkeypatch):
    """The argparse parser a command-line script builds: its main() is run up to parse_args, which hands it over."""
    class Built(Exception):
        pass

    def hand_over(parser, *args, **kwargs):
        raise Built(parser)

    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", hand_over)
    monkeypatch.setattr(sys, "argv", [path])
    with pytest.raises(Built) as built:
        module.main(*([] if module.main.__code__.co_argcount == 0 else [None]))
    return built.value.args[0]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help_names_each_default_once(entry, monkeypatch):
    """Every option that has a default names it in its own help, once; none prints a default that says nothing."""
    for action in parser_of(entry, monkeypatch)._actions:
        said = (action.help or "").replace("%(default)s", str(action.default))
        if action.option_strings and action.default not in (None, False, "", argparse.SUPPRESS):
            assert "default" in said, f"{entry} {action.option_strings[0]} does not name its default"
        assert len(re.findall(r"\((the )?default\b", said)) <= 1, f"{entry} {action.dest} names its default twice"
    out = run_script(ROOT / entry, "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps the help at the terminal's width
    for empty in ("(default: None)", "(default: False)", "(default: )"):
        assert empty not in text  # no default that says nothing
    assert not re.search(r"\(default: [^)]*\) \(default:", text)  # none said twice


def test_data_formats(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("First sentence. Second one!\nThird line\n\nAnother document.\n")
    (tmp_path / "b.jsonl").write_text('{"text": "A json document. With two sentences."}\n{"text": "And one more."}\n')
    docs = list(gpt.read_corpus(f"{tmp_path / 'a'},{tmp_path / '*.jsonl'}"))
    assert docs == [["First sentence.", "Second one!", "Third line"], ["Another document."],
                    ["A json document.", "With two sentences."], ["And one more."]]
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config, split: [{"text": f"{name} {config} {split}."}, {"text": ""}]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert list(gpt.read_corpus("hf:wikitext:wikitext-2-raw-v1")) == [["wikitext wikitext-2-raw-v1 train."]]
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(gpt.UserError, match="needs the `datasets` library"):
        gpt.read_corpus("hf:wikitext")


def test_default_corpus_is_documents_of_sentences():
    docs = gpt.default_corpus()
    assert len(docs) > 400 and 1_000_000 < sum(len(s) for d in docs for s in d) < 4_000_000
    assert docs == gpt.default_corpus()  # deterministic order
    corpus = gpt.read_corpus(None)
    assert list(corpus) == docs and list(corpus) == docs  # streamed again each time
    split = list(gpt.split_documents(corpus))
    assert [d for _, d in split] == docs and [i for i, (s, _) in enumerate(split) if s == "val"] == list(
        range(19, len(docs), 20))  # every 20th document
    assert corpus.key == gpt.read_corpus(None).key  # the cache key is stable, and needs no reading


def corpus_of(docs, folder):
    """`docs` (lists of sentences) written as a corpus file, and read back."""
    path = Path(folder) / "corpus.txt"
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n")
    return gpt.read_corpus(str(path))


def test_validation_never_holds_a_training_sentence(gpt_tokenizer, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gpt_tokenizer))
    docs = [[f"Document {i} sentence {j}." for j in range(3)] for i in range(40)]
    docs[19] = docs[3][1:] + ["Only in validation."]  # held out, but contained in a training document
    docs[39] = list(docs[5])  # held out, and all of it in training
    held = [i for i, (split, _) in enumerate(gpt.split_documents(corpus_of(docs, tmp_path))) if split == "val"]
    assert held == [19, 39]
    data = gpt.cache_tokens(corpus_of(docs, tmp_path), tok, tmp_path / "cache")
    assert len(data["train"]["documents"]) == 38 and data["val"]["documents"].tolist() == [[0, 1]]
    assert data["val"]["tokens"].tolist() == tok.encode("Only in validation.", add_special_tokens=False).ids
    docs[19] = list(docs[3])
    with pytest.raises(gpt.UserError, match="no validation text"):
        gpt.cache_tokens(corpus_of(docs, tmp_path), tok, tmp_path / "cache")


def test_held_out_documents_of_a_short_corpus_and_of_a_large_one(tmp_path, monkeypatch):
    """Fewer than 20 documents: the last one is held out. A large corpus holds out every 20th document only until
    validation has VAL_BYTES of text: validation stays small whatever the corpus."""
    docs = [[f"Document {i}."] for i in range(5)]
    assert [s for s, _ in gpt.split_documents(corpus_of(docs, tmp_path))] == ["train"] * 4 + ["val"]
    monkeypatch.setattr(gpt, "VAL_BYTES", 3 * len("Document 19. "))  # three held-out documents
    docs = [[f"Document {i}."] for i in range(200)]
    held = [i for i, (s, _) in enumerate(gpt.split_documents(corpus_of(docs, tmp_path))) if s == "val"]
    assert held == [19, 39, 59]
    with pytest.raises(gpt.UserError, match="single document"):
        list(gpt.split_documents(corpus_of([["One."]], tmp_path)))


def test_cached_tokens_are_each_documents_encoding(corpus, gpt_tokenizer, tmp_path):
    """A document's cached ids are exactly the tokenizer's encoding of its text (sentences joined by spaces), and its
    sentences' offsets cover them in order."""
    from tokenizers import Tokenizer

    tok, docs = Tokenizer.from_file(str(gpt_tokenizer)), gpt.read_corpus(str(corpus))
    split = gpt.cache_tokens(docs, tok, tmp_path, eod_id=1)["train"]
    for d, (first, last) in zip(training_documents(gpt, corpus), split["documents"]):
        (start, _), (_, end) = split["sentences"][first], split["sentences"][last - 1]
        assert split["tokens"][start:end].tolist() == tok.encode(" ".join(d)).ids and split["tokens"][end] == 1
        assert (split["sentences"][first + 1:last, 0] == split["sentences"][first:last - 1, 1]).all()


BAD_INPUTS = {
    "missing data": (["--data", "{tmp}/nope.txt"], "no such file"),
    "empty corpus": (["--data", "{tmp}/empty.txt"], "no text found"),
    "unknown size": (["--size", "huge"], "--size 'huge' is unknown"),
    "negative steps": (["--steps", "-3"], "--steps must be positive"),
    "nan learning rate": (["--lr", "nan"], "--lr must be positive, got nan"),
    "negative seed": (["--seed", "-1"], "--seed must be 0 or more"),
    "no Apple GPU": (["--device", "mps"], "--device mps: no Apple GPU"),
    "out is a file": (["--out", "{tmp}/empty.txt"], "cannot make the run folder"),
    "out under a file": (["--out", "{tmp}/empty.txt/run"], "cannot make the run folder"),
    "read-only out": (["--out", "{tmp}/readonly"], "the run folder is not writable"),
    "unreadable pretrained": (["--from-pretrained", "{tmp}/empty_dir"], "no readable config.json"),
    "wrong model type": (["--from-pretrained", "{tmp}/bert_dir"], "holds a 'bert' model"),
    "corrupt checkpoint": (["--resume", "--out", "{tmp}/corrupt"], "cannot read checkpoint"),
    "existing checkpoint": (["--out", "{tmp}/corrupt"], "exists: pass --resume"),
    "negative prefetch": (["--prefetch", "-1"], "--prefetch must be 0 or more"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clear_line(case, corpus, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "bert_dir").mkdir()
    (tmp_path / "bert_dir" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "ckpt.pt").write_bytes(b"not a checkpoint")
    argv, message = BAD_INPUTS[case]
    argv = ["--train", "--device", "cpu", "--data", str(corpus), "--out", str(tmp_path / "run")] + \
        [a.format(tmp=tmp_path) for a in argv]
    (tmp_path / "readonly").mkdir()
    real_access = os.access  # root may write anywhere, so a read-only folder is what os.access says it is
    monkeypatch.setattr(gpt.os, "access", lambda p, mode: "readonly" not in str(p) and real_access(p, mode))
    if case not in ("missing data", "empty corpus"):  # the arguments are checked before any data work
        monkeypatch.setattr(gpt, "read_corpus", lambda spec: pytest.fail("read the corpus before checking arguments"))
    assert gpt.run(gpt.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert (tmp_path / "corrupt" / "ckpt.pt").read_bytes() == b"not a checkpoint"


def test_empty_items_of_data_are_ignored(tmp_path):
    (tmp_path / "a.txt").write_text("One sentence. Two.\n\nAnother document.\n")
    assert list(gpt.read_corpus(f"{tmp_path / 'a.txt'},")) == [["One sentence.", "Two."], ["Another document."]]


def test_a_run_folder_is_owned_by_one_run(tmp_path):
    """The OS lock on out/lock: held by a live process, the folder is refused; once that process is gone (killed,
    with no chance to clean up), it is free again, with nothing to delete."""
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]);"
                               " lock.acquire(); print('held', flush=True); time.sleep(60)", str(tmp_path / "lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(gpt.UserError, match="is in use by another run"):
            gpt.lock_folder(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with gpt.lock_folder(tmp_path):  # its process is gone: the OS released the lock
        pass


def test_the_tokenizer_belongs_to_the_checkpoint(corpus, gpt_tokenizer, tmp_path, capsys):
    """A resumed run or a demo never trains or takes another tokenizer: the checkpoint holds its own, and the run
    folder's tokenizer.json is only an export of it."""
    shutil.copy(gpt_tokenizer, tmp_path / "tokenizer.json")
    argv = ["--train", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--data", str(corpus),
            "--steps", "1"]
    gpt.train(gpt.build_parser().parse_args(argv))
    with gpt.lock_folder(tmp_path):  # released at the end of the run
        pass
    own = gpt.load_checkpoint(tmp_path / "ckpt.pt")["tokenizer"]
    assert own.to_str() == gpt.load_tokenizer(tmp_path).to_str()
    other = gpt.train_tokenizer([["a completely different corpus ."], ["with two documents ."]], gpt.PRESETS["tiny"])
    other.save(str(tmp_path / "tokenizer.json"))
    resume = [*argv[:-1], "2", "--resume"]
    model = gpt.train(gpt.build_parser().parse_args(resume))
    assert model.tokenizer.to_str() == own.to_str()  # the checkpoint's, not the file's
    assert gpt.model_from_checkpoint(tmp_path / "ckpt.pt").tokenizer.to_str() == own.to_str()
    (tmp_path / "tokenizer.json").unlink()
    assert gpt.run(gpt.main, ["--out", str(tmp_path), "--sample", "the"]) == 0
    assert gpt.run(gpt.main, [*resume[:-2], "3", "--resume"]) == 0
    assert not (tmp_path / "tokenizer.json").exists()  # nothing retrained
    assert gpt.load_checkpoint(tmp_path / "ckpt.pt")["tokenizer"].to_str() == own.to_str()


def test_a_config_json_without_a_key_and_a_corrupt_tokenizer_are_clear_errors(tmp_path, capsys):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text('{"model_type": "openai-gpt"}')
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(gpt.UserError, match="config.json has no 'vocab_size'"):
        gpt.Model.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(gpt.UserError, match="tokenizer.json is not a readable tokenizer"):
        gpt.load_tokenizer(tmp_path)


@pytest.mark.parametrize("flag", [["--top-k", "-1"], ["--temperature", "nan"], ["--temperature", "-1"],
                                  ["--max-new-tokens", "-5"]])
def test_sampling_flags_out_of_range_are_refused_before_loading(flag, tmp_path, capsys):
    assert gpt.run(gpt.main, ["--sample", "the", "--out", str(tmp_path), *flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag[0]} must be ") and err.count("\n") == 1
    assert f"got {flag[1]}" in err


def test_a_bad_jsonl_line_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "One document."}\n\n{"txt": "no text field"}\n')
    with pytest.raises(gpt.UserError, match="d.jsonl, line 3: not a JSON object with a 'text' field"):
        list(gpt.read_corpus(str(tmp_path / "d.jsonl")))


def limited(limit, *argv):
    """gpt.py run in a child process that may write no file beyond `limit` bytes (RLIMIT_FSIZE): a disk that is
    full for large files. The write then really fails, with the error each library raises for it."""
    code = ("import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return run_script("-c", code, ROOT / "gpt.py", *argv)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="RLIMIT_FSIZE as on Linux")
def test_a_write_that_fails_is_one_line_and_keeps_the_last_checkpoint(corpus, gpt_tokenizer, tmp_path):
    shutil.copy(gpt_tokenizer, tmp_path / "tokenizer.json")
    argv = ["--train", "--size", "tiny", "--device", "cpu", "--out", tmp_path, "--data", corpus,
            "--max-new-tokens", "1"]
    assert run_script(ROOT / "gpt.py", *argv, "--steps", "1").returncode == 0
    before = (tmp_path / "ckpt.pt").read_bytes()
    for what, limit, extra in (("checkpoint", 1 << 20, ["--steps", "2", "--resume"]),  # the checkpoint: ~16 MB
                               ("export", 1 << 20, ["--steps", "2", "--resume", "--export", tmp_path / "hf"])):
        done = limited(limit, *argv, *extra)
        assert done.returncode == 2, (what, done.stderr[-2000:])
        assert done.stderr.startswith("error: cannot write ") and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr  # torch's own words for it are "[enforce fail at ...]"
        assert (tmp_path / "ckpt.pt").read_bytes() == before  # the previous checkpoint, intact
        assert not list(tmp_path.glob("*.tmp"))
    shutil.rmtree(tmp_path / "cache")
    done = limited(4096, *argv, "--steps", "2", "--resume")  # the token cache's files
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "File too large" in done.stderr and (tmp_path / "ckpt.pt").read_bytes() == before
    assert gpt.run(gpt.main, [*map(str, argv), "--steps", "2", "--resume"]) == 0  # a later run builds it whole


@pytest.mark.parametrize("script", ["gpt", "bert", "roberta", "albert", "electra"])
def test_every_script_names_a_corrupt_tokenizer_and_a_foreign_checkpoint(script, tmp_path):
    """The shared plumbing is one text (test_shared_code.py); each script's own tokenizer reader is checked here."""
    module = importlib.import_module(script)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(module.UserError, match="tokenizer.json is not a readable tokenizer"):
        module.load_tokenizer(tmp_path)
    torch.save({"script": "another"}, tmp_path / "ckpt.pt")
    with pytest.raises(module.UserError, match=f"is not an? {script}.py checkpoint"):
        module.load_checkpoint(tmp_path / "ckpt.pt")
    torch.save({"script": script, "tokenizer": "0123456789abcdef"}, tmp_path / "ckpt.pt")
    with pytest.raises(module.UserError, match="holds no tokenizer"):
        module.load_checkpoint(tmp_path / "ckpt.pt")


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert gpt.run(interrupted, ["--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted before the first checkpoint was written\n"
    (tmp_path / "ckpt.pt").write_bytes(b"")
    assert gpt.run(interrupted, ["--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == f"interrupted: the last checkpoint is {tmp_path / 'ckpt.pt'}; continue with " \
                                      f"--resume --out {tmp_path}\n"


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    result = run_script(ROOT / "gpt.py", "--train", "--data", tmp_path / "missing", "--out", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --data: no such file") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "ckpt.pt").exists()


# --- preparing a large corpus: streaming, caches on disk, warm starts ---


@pytest.mark.parametrize("script", ["gpt", "bert"])
def test_a_prepared_run_starts_without_reading_or_building_anything(script, corpus, tmp_path, monkeypatch, capsys):
    """--prepare-only leaves the tokenizer and every cache in --out and no checkpoint; the run that follows maps them:
    it neither reads the corpus, nor tokenizes, nor makes instances."""
    module = importlib.import_module(script)
    argv = ["--size", "tiny", "--device", "cpu", "--data", str(corpus), "--out", str(tmp_path)]
    assert module.run(module.main, ["--prepare-only", *argv]) == 0
    assert "prepared" in capsys.readouterr().out
    assert (tmp_path / "tokenizer.json").exists() and not (tmp_path / "ckpt.pt").exists()
    for name in ("split_documents", "train_tokenizer", "make_instances")[:2 if script == "gpt" else 3]:
        # make_instances is a generator: it does its work only when the cache reads it
        monkeypatch.setattr(module, name, lambda *a, **k: (pytest.fail("prepared data was made again") for _ in [0]))
    real = module.cached
    monkeypatch.setattr(module, "cached", lambda path, key, blocks, what: real(
        path, key, (pytest.fail("a cache was written again") for _ in [0]), what))
    assert module.run(module.main, ["--train", "--steps", "1", *argv]) == 0
    assert (tmp_path / "ckpt.pt").exists()


def test_instances_are_cached_per_setting(corpus, tmp_path, capsys):
    """The examples are made once per setting that shapes them: a run at another sequence length makes its own;
    a repeated setting maps the files made before."""
    import bert

    shutil.copy(conftest_tokenizer(bert, corpus, tmp_path), tmp_path / "tokenizer.json")
    tok = bert.load_tokenizer(tmp_path)
    for seq_len in (64, 128, 64):
        cfg = dataclasses.replace(bert.PRESETS["tiny"], seq_len=seq_len)
        data = bert.load_data(bert.read_corpus(str(corpus)), tok, tmp_path, cfg)
        assert isinstance(data["train"]["a"], np.memmap)
        ids, _ = bert.assemble(data["train"], np.arange(50), seq_len)
        assert ids.shape == (50, seq_len)
    out = capsys.readouterr().out
    assert out.count("tokenizing the corpus") == 1 and out.count("making the training examples") == 2 * 2  # 2 splits
    assert len(list((tmp_path / "cache").glob("*/train.instances-*"))) == 2


def conftest_tokenizer(module, corpus, folder):
    from conftest import tokenizer_file

    (Path(folder) / "tok").mkdir(exist_ok=True)
    return tokenizer_file(module, corpus, Path(folder) / "tok")


def test_cached_arrays(tmp_path):
    """Rows given in blocks, one by one or many, come back in order, in the dtype of the first block; an interrupted
    build leaves nothing that a later call would read, and the later call builds again."""
    def blocks(fail=False):
        for i in range(0, 700_000, 100_000):  # 1.4 million numbers in seven blocks
            yield {"pairs": np.stack([np.arange(i, i + 100_000), -np.arange(i, i + 100_000)], 1),
                   "none": np.zeros((0, 3), np.int8)}
        yield {"single": np.arange(10, dtype=np.uint16)}
        yield {"single": np.array([65535])}
        if fail:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gpt.cached(tmp_path / "c", ["k"], blocks(fail=True), "testing")
    assert [p.suffix for p in tmp_path.iterdir()] == [".tmp"]  # only the temporary folder: nothing a call reads
    arrays = gpt.cached(tmp_path / "c", ["k"], blocks(), "testing")
    assert arrays["pairs"].shape == (700_000, 2) and (arrays["pairs"][:, 0] == -arrays["pairs"][:, 1]).all()
    assert arrays["pairs"][-1].tolist() == [699_999, -699_999]
    assert arrays["single"].dtype == np.uint16 and arrays["single"].tolist() == [*range(10), 65535]
    assert arrays["none"].shape == (0, 3)
    again = gpt.cached(tmp_path / "c", ["k"], (pytest.fail("built twice") for _ in [0]), "testing")
    assert np.array_equal(again["pairs"], arrays["pairs"])


def test_a_damaged_cache_is_made_again(corpus, gpt_tokenizer, tmp_path, capsys):
    """A cache file cut short on disk (a copy interrupted, a disk error) is found by the sizes its build recorded:
    the next run makes the cache again, with the same arrays, instead of failing to map it."""
    shutil.copy(gpt_tokenizer, tmp_path / "tokenizer.json")
    tok, cfg = gpt.load_tokenizer(tmp_path), tiny()
    first = {k: np.array(v) for k, v in gpt.load_data(gpt.read_corpus(str(corpus)), tok, tmp_path, cfg)["train"].items()
             if k != "folder"}
    [tokens] = (tmp_path / "cache").glob("tokens-*/train.tokens")
    with open(tokens, "r+b") as f:
        f.truncate(tokens.stat().st_size // 2)
    capsys.readouterr()
    again = gpt.load_data(gpt.read_corpus(str(corpus)), tok, tmp_path, cfg)["train"]
    assert "its files were damaged" in capsys.readouterr().out
    assert all(np.array_equal(again[k], v) for k, v in first.items())


def test_progress_lines_say_how_far_and_how_long(monkeypatch, capsys):
    clock = iter(range(0, 1000, 11))  # 11 seconds pass between calls
    monkeypatch.setattr(gpt.time, "time", lambda: next(clock))
    assert list(gpt.progress([("a", 50e6)], "tokenizing", 200e6)) == ["a"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tokenizing: 50 MB of 200 MB (25%), 4.5 MB/s, eta 33s")
    assert lines[1] == "tokenizing: done in 22s"


def test_a_bad_line_found_while_streaming_is_one_error_line(tmp_path, capsys, monkeypatch):
    """The corpus is read while the tokenizer trains: a bad line deep in a file still ends the run with one line,
    and no tokenizer is left behind."""
    monkeypatch.setattr(gpt, "get_tokenizer", TRAIN_TOKENIZER)
    lines = [json.dumps({"text": f"Document {i}. It has two sentences."}) for i in range(100)] + ["not json"]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["--train", "--device", "cpu", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "run")]
    assert gpt.run(gpt.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data: ") and "d.jsonl, line 101" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "tokenizer.json").exists()


def test_the_cache_key_follows_the_files_not_their_reading(tmp_path):
    """A file's key is its path, size and modification time: the same file keys the same without being read, and
    an edited file keys differently, so its caches are made again."""
    path = tmp_path / "c.txt"
    path.write_text("One. Two.\n\nThree.\n")
    key = gpt.read_corpus(str(path)).key
    assert gpt.read_corpus(str(path)).key == key
    path.write_text("One. Two.\n\nFour.\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert gpt.read_corpus(str(path)).key != key


def test_a_rank_other_than_0_never_prepares(tmp_path, monkeypatch):
    """On a machine without the prepared folder, a rank other than 0 stops with one line instead of building data
    (or a tokenizer) of its own, which would not be rank 0's."""
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(gpt.UserError, match="missing on this machine"):
        gpt.cached(tmp_path / "c", [], (pytest.fail("built on rank 1") for _ in [0]), "testing")
    with pytest.raises(gpt.UserError, match="missing on this machine"):
        TRAIN_TOKENIZER(tmp_path, None, tiny())
    assert not list(tmp_path.iterdir())


def test_a_rank_shown_only_its_own_gpu_uses_that_one(monkeypatch):
    # SLURM's --gpus-per-task=1: LOCAL_RANK 3, but one visible device, cuda:0 (CUDA's calls stand in for a GPU here)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    rt = gpt.setup_runtime(gpt.build_parser().parse_args(["--device", "cuda"]))
    assert rt.device == calls[0] == torch.device("cuda:0") and rt.dtype == "bf16"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # torchrun on one machine: each rank its own
    assert gpt.setup_runtime(gpt.build_parser().parse_args(["--device", "cuda"])).device == torch.device("cuda:3")
