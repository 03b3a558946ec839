"""Throughput, MFU and memory of the five paper scripts, side by side with Hugging Face transformers.

For each model, one full pretraining step (forward, loss, backward, optimiser) of ours and of the Hugging Face
counterpart with the same config, batch and dtype, in this process, after warm-up; the median of many steps.

    python bench.py                                   # every model, tiny, on the CPU (or small on a GPU)
    python bench.py --device cuda --size base --seq-len 512 --compile
    python bench.py --profile runs/profile.txt        # and each model's costliest operations in a few more steps
"""

import argparse
import dataclasses
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODELS = ["gpt", "bert", "roberta", "albert", "electra"]


def make_batch(name, cfg, B, device, seed=0):
    """A random batch in the format the script's compute_loss reads: no padding, every sequence full length; the
    encoders' masked positions are a random 15% (at most max_predictions) of each row, labelled with the tokens."""
    g = torch.Generator().manual_seed(seed)
    T = cfg.seq_len
    ids = torch.randint(5, cfg.vocab_size, (B, T + (name == "gpt")), generator=g)
    if name == "gpt":
        return {"input_ids": ids[:, :-1].to(device), "targets": ids[:, 1:].to(device)}
    P = min(cfg.max_predictions, round(0.15 * T))
    positions = torch.rand(B, T, generator=g).argsort(1)[:, :P]  # (B, P), distinct
    batch = {"input_ids": ids.scatter(1, positions, 4),  # the mask token of the WordPiece vocabularies
             "attention_mask": torch.ones(B, T, dtype=torch.long), "mlm_positions": positions,
             "mlm_labels": ids.gather(1, positions)}
    if name != "roberta":
        batch["token_type_ids"] = (torch.arange(T) >= T // 2).long().expand(B, T).contiguous()
    if name in ("bert", "albert"):
        batch["pair_labels"] = torch.randint(0, 2, (B,), generator=g)
    if name == "electra":  # the tokens detection is scored on, and replacements for evaluation only
        batch["content"] = torch.ones(B, T, dtype=torch.bool)
        batch["uniform_tokens"] = torch.randint(5, cfg.vocab_size, (B, P), generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def masked_loss(head, states, batch):
    """The MLM cross-entropy of a Hugging Face head applied at the masked positions only, as ours applies its own:
    both project B x P rows onto the vocabulary, not B x T (equal work, so the ratio compares implementations)."""
    h = states.gather(1, batch["mlm_positions"][..., None].expand(-1, -1, states.shape[-1]))  # (B, P, H)
    logits = head(h)  # (B, P, V)
    return logits, F.cross_entropy(logits.flatten(0, 1).float(), batch["mlm_labels"].flatten())


def reference(name, cfg):
    """The Hugging Face counterpart of `cfg`, and a function of a batch that returns its pretraining loss: its
    encoder and its heads, the vocabulary projection at the masked positions only (masked_loss)."""
    import transformers as tf

    common = dict(vocab_size=cfg.vocab_size, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                  intermediate_size=cfg.ffn, hidden_act=cfg.activation, hidden_dropout_prob=cfg.dropout,
                  attention_probs_dropout_prob=cfg.dropout, layer_norm_eps=cfg.eps, attn_implementation="sdpa")
    if name == "gpt":
        model = tf.OpenAIGPTLMHeadModel(tf.OpenAIGPTConfig(
            vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.hidden, n_layer=cfg.layers,
            n_head=cfg.heads, afn="gelu", resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, layer_norm_epsilon=cfg.eps))  # its "gelu" is the tanh one; eager attention only
        return model, lambda b: model(b["input_ids"], labels=b["input_ids"]).loss  # shifted inside: T - 1 targets
    if name == "bert":
        model = tf.BertForPreTraining(tf.BertConfig(hidden_size=cfg.hidden, max_position_embeddings=cfg.max_len,
                                                    type_vocab_size=cfg.type_vocab, **common))
        def loss(b):
            out = model.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            mlm = masked_loss(model.cls.predictions, out.last_hidden_state, b)[1]
            return mlm + F.cross_entropy(model.cls.seq_relationship(out.pooler_output).float(), b["pair_labels"])
        return model, loss
    if name == "roberta":
        model = tf.RobertaForMaskedLM(tf.RobertaConfig(hidden_size=cfg.hidden, max_position_embeddings=cfg.max_len,
                                                       type_vocab_size=1, pad_token_id=1, **common))
        return model, lambda b: masked_loss(model.lm_head, model.roberta(b["input_ids"], b["attention_mask"])
                                            .last_hidden_state, b)[1]
    if name == "albert":
        model = tf.AlbertForPreTraining(tf.AlbertConfig(embedding_size=cfg.embed, hidden_size=cfg.hidden,
                                                        max_position_embeddings=cfg.max_len, **common))
        def loss(b):
            out = model.albert(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            mlm = masked_loss(model.predictions, out.last_hidden_state, b)[1]
            return mlm + F.cross_entropy(model.sop_classifier(out.pooler_output).float(), b["pair_labels"])
        return model, loss
    import electra

    g = cfg.gen_hidden
    disc = tf.ElectraForPreTraining(tf.ElectraConfig(embedding_size=cfg.embed, hidden_size=cfg.hidden,
                                                     max_position_embeddings=cfg.max_len, **common))
    gen = tf.ElectraForMaskedLM(tf.ElectraConfig(**{**common, "num_attention_heads": max(1, g // 64),
                                                    "intermediate_size": 4 * g}, embedding_size=cfg.embed,
                                                 hidden_size=g, max_position_embeddings=cfg.max_len))
    gen.electra.embeddings = disc.electra.embeddings  # shared, as ELECTRA trains them
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight

    def loss(b):
        states = gen.electra(b["input_ids"], b["attention_mask"], b["token_type_ids"]).last_hidden_state
        logits, mlm = masked_loss(lambda h: gen.generator_lm_head(gen.generator_predictions(h)), states, b)
        fake, replaced = electra.sample_replacements(b["input_ids"], b["mlm_positions"], b["mlm_labels"],
                                                     logits)  # the same sampling as ours
        return mlm + 50 * disc(fake, b["attention_mask"], b["token_type_ids"], labels=replaced.float()).loss

    return torch.nn.ModuleDict({"generator": gen, "discriminator": disc}), loss


def measure(model, loss_fn, optimizer, batch, steps, warmup, device, amp):
    """Median seconds of one step (forward, loss, backward, clip, optimiser) over `steps` after `warmup`, and the
    peak memory allocated on CUDA (None elsewhere)."""
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with amp:
            loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()  # for the clock only: the step itself never waits on the host
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss became {float(loss)}")
    memory = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return statistics.median(times), memory


def profile(model, loss_fn, optimizer, batch, device, amp, steps=3):
    """The costliest operations of `steps` more steps (after `measure`'s warm-up), by their own time on the
    device (on the CPU off CUDA): a table of 15 rows."""
    from torch.profiler import ProfilerActivity

    cuda = device.type == "cuda"
    with torch.profiler.profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
        measure(model, loss_fn, optimizer, batch, steps, 0, device, amp)
    return prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=15, max_name_column_width=70)


def bench_one(name, args, device, amp):
    module = importlib.import_module(name)
    cfg = module.PRESETS[args.size]
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("seq_len", args.seq_len), ("batch_size", args.batch_size))
                                      if v is not None})
    if cfg.seq_len > cfg.max_len - (2 if name == "roberta" else 0):
        fail(f"--seq-len {cfg.seq_len} is longer than {name}'s {cfg.max_len} positions")
    batch = make_batch(name, cfg, cfg.batch_size, device)
    row = {"model": name, "size": args.size, "batch": cfg.batch_size, "seq_len": cfg.seq_len}
    torch.manual_seed(0)
    ours = module.Model(cfg).to(device)
    theirs, their_loss = reference(name, cfg)
    theirs.to(device).train()
    fpt, peak = module.flops_per_token(ours, cfg), module.peak_flops(device)
    row["params"] = ours.num_params()
    row["hf_params"] = sum(p.numel() for p in theirs.parameters())  # equal when the configs match
    runs = {"ours": (ours, lambda b: module.compute_loss(ours, b, cfg)[0], module.configure_optimizer(ours, cfg, device)),
            "hf": (theirs, their_loss, torch.optim.AdamW(theirs.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                                          eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                                                          fused=device.type != "mps"))}
    for who, (model, loss_fn, optimizer) in runs.items():
        if args.compile:  # the same for both: forward and loss in one compiled graph
            loss_fn = torch.compile(loss_fn)
            runs[who] = model, loss_fn, optimizer
        seconds, memory = measure(model, loss_fn, optimizer, batch, args.steps, args.warmup, device, amp)
        tokens = cfg.batch_size * cfg.seq_len / seconds
        row[who] = {"step_ms": round(seconds * 1e3, 2), "tokens_per_s": round(tokens),
                    "mfu": round(tokens * fpt / peak, 4) if peak else None,
                    "peak_memory_mb": round(memory / 2**20) if memory is not None else None}
    row["ratio"] = round(row["ours"]["tokens_per_s"] / row["hf"]["tokens_per_s"], 3)
    if args.profile:  # after both timings, which the profiler can then not slow
        with open(args.profile, "a") as f:
            f.write(f"== {name}, ours: {cfg.batch_size} x {cfg.seq_len}, {args.size}"
                    f"{', compiled' if args.compile else ''}\n{profile(*runs['ours'], batch, device, amp)}\n")
    return row


def table(rows, device):
    head = ["model", "params", "batch × seq", "ours tok/s", "HF tok/s", "ours/HF"]
    if device.type == "cuda":
        head += ["ours MFU", "HF MFU", "ours MB", "HF MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error'][:120]} |")
            continue
        cells = [r["model"], f"{r['params'] / 1e6:.2f}M", f"{r['batch']} × {r['seq_len']}",
                 f"{r['ours']['tokens_per_s']:,}", f"{r['hf']['tokens_per_s']:,}", f"{r['ratio']:.2f}×"]
        if device.type == "cuda":
            cells += [f"{r[w]['mfu']:.1%}" if r[w]["mfu"] else "—" for w in ("ours", "hf")]
            cells += [f"{r[w]['peak_memory_mb']:,}" for w in ("ours", "hf")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fail(message):
    """Bad input: one line on stderr and exit status 2, as in the paper scripts."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto (the default): CUDA if available")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="autocast dtype for both; auto (the default): as the paper scripts choose it "
                        "(bf16 where native)")
    p.add_argument("--size", default=None, help="preset of every model (default: small on CUDA, else tiny)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated scripts to measure (default: all five)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported (default: 10)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps first (compilation, allocator, caches; default: 3)")
    p.add_argument("--json", default="runs/bench.json", help="where to write the results (default: runs/bench.json)")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="also profile 3 more steps of each of our models: a table of its costliest operations, in PATH")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    args.size = args.size or ("small" if device.type == "cuda" else "tiny")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        fail(f"--models: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    for name, value in (("--seq-len", args.seq_len), ("--batch-size", args.batch_size), ("--steps", args.steps)):
        if value is not None and value <= 0:
            fail(f"{name} must be positive, got {value}")
    if args.warmup < 0:
        fail(f"--warmup must be 0 or more, got {args.warmup}")
    sizes = {size for m in models for size in importlib.import_module(m).PRESETS}
    if args.size not in sizes:
        fail(f"--size {args.size!r} is unknown; choose one of {', '.join(sorted(sizes))}")
    out = Path(args.json)
    for flag, path in [(f, Path(given)) for f, given in (("--json", args.json), ("--profile", args.profile)) if given]:
        try:  # checked before the benchmark, not after it
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(21, "a folder")
        except OSError as e:
            fail(f"{flag} {path}: cannot write a file there ({e.strerror})")
    if args.profile:
        Path(args.profile).write_text("")  # this run's tables only
    import gpt  # the scripts' own choice of dtype, for `auto`

    rt = gpt.setup_runtime(argparse.Namespace(device=device.type, dtype=args.dtype))  # also TF32 on CUDA
    amp = rt.amp
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    meta = {"device": name, "torch": torch.__version__, "dtype": rt.dtype,
            "compile": args.compile, "steps": args.steps, "warmup": args.warmup, "date": time.strftime("%Y-%m-%d")}
    rows = []
    for model in models:
        if args.size not in importlib.import_module(model).PRESETS:
            print(f"{model}: no {args.size!r} preset, skipped", file=sys.stderr)
            continue
        torch._dynamo.reset()  # each model compiled afresh: no cache, guard or dynamic shape from the last
        try:
            rows.append(bench_one(model, args, device, amp))
        except Exception as e:  # one model's failure is its row; the next model still runs
            rows.append({"model": model, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
            print(f"{model}: failed: {rows[-1]['error']}", file=sys.stderr)
            torch.cuda.empty_cache()
        else:
            r = rows[-1]
            print(f"{model}: ours {r['ours']['tokens_per_s']:,} tok/s, HF {r['hf']['tokens_per_s']:,} tok/s "
                  f"({r['ratio']:.2f}×)", file=sys.stderr)
        tmp = out.with_suffix(".tmp")  # after each model, whole: a stopped run keeps what it measured
        tmp.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
        tmp.replace(out)
    print(f"{name}, torch {torch.__version__}, {meta['dtype']}{', compiled' if args.compile else ''}, "
          f"median of {args.steps} steps")
    print(table(rows, device))
    print(f"results written to {out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
