"""electra.py: parity with ElectraForPreTraining and ElectraForMaskedLM, one shared embedding module, the replaced
token detection objective (sampling without gradient, labels, 85/15 masking, λ), training, export, a small diff."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import conftest
import electra

DIFF_BUDGET = 652  # `diff bert.py electra.py`: 573, +79 named steps, hash streams, 100 columns
# (+5 with bert.py's next_sentence switch, the masked LM alone: the ELECTRA release's BERT baseline)


def tiny(**changes):
    return dataclasses.replace(electra.PRESETS["tiny"], **changes)


@pytest.fixture(scope="module")
def tokenizer_file(corpus, tmp_path_factory):
    return conftest.tokenizer_file(electra, corpus, tmp_path_factory.mktemp("electra-tokenizer"))


@pytest.fixture(scope="module")
def data(corpus, tokenizer_file, tmp_path_factory):
    return conftest.split_data(electra, corpus, tokenizer_file, tmp_path_factory.mktemp("electra-data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A discriminator (H 128, E 24: with a projection) and its generator (H 64, 1 head, FFN 256) sharing embeddings."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    torch.manual_seed(0)
    common = dict(vocab_size=99, embedding_size=24, num_hidden_layers=2, max_position_embeddings=20,
                  attn_implementation="eager")
    disc = ElectraForPreTraining(ElectraConfig(hidden_size=128, num_attention_heads=2, intermediate_size=96, **common))
    gen = ElectraForMaskedLM(ElectraConfig(hidden_size=64, num_attention_heads=1, intermediate_size=256, **common))
    with torch.no_grad():  # non-trivial biases and LayerNorms, so that mapping mistakes show
        for name, p in [*disc.named_parameters(), *gen.named_parameters()]:
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())  # shared, as in the release
    paths = tmp_path_factory.mktemp("electra-disc"), tmp_path_factory.mktemp("electra-gen")
    disc.save_pretrained(paths[0])
    gen.save_pretrained(paths[1])
    return disc.eval(), gen.eval(), *paths


def inputs():
    torch.manual_seed(1)
    ids = torch.randint(5, 99, (2, 12))
    ids[:, 0], ids[1, 8:] = 2, 0  # [CLS], then [PAD] on the second row
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, (ids != 0).long(), types


@pytest.mark.floats
def test_parity_with_electra_for_pretraining_and_masked_lm(reference):
    disc, gen, disc_path, gen_path = reference
    ours = electra.Model.from_pretrained(disc_path, generator=gen_path).eval()
    ids, mask, types = inputs()
    everywhere, nothing_chosen = torch.arange(12).expand(2, 12), torch.full((2, 12), -100)
    with torch.no_grad():
        ref_disc = disc(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        ref_gen = gen(ids, attention_mask=mask, token_type_ids=types)
        mlm_logits, rtd_logits, replaced = ours(ids, mask, types, everywhere, nothing_chosen)
        hidden = ours.encode(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], ref_disc.hidden_states[-1][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(rtd_logits[real], ref_disc.logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(mlm_logits[real], ref_gen.logits[real], atol=1e-5, rtol=0)
    assert not replaced.any()  # nothing chosen, nothing replaced
    shared = sum(p.numel() for p in gen.electra.embeddings.parameters())
    assert ours.num_params() == sum(p.numel() for p in [*disc.parameters(), *gen.parameters()]) - shared


@pytest.mark.floats
def test_discriminator_alone_gets_a_fresh_generator_and_a_warning(reference, capsys):
    disc, _, disc_path, _ = reference
    ours = electra.Model.from_pretrained(disc_path).eval()
    err = capsys.readouterr().err
    assert "has no generator.blocks, generator.project, head, mlm.dense, mlm.ln: freshly initialised" in err
    ids, mask, types = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours.detect(ids, mask, types)[mask.bool()],
                                   disc(ids, attention_mask=mask, token_type_ids=types).logits[mask.bool()],
                                   atol=1e-5, rtol=0)


def test_one_embedding_module_feeds_both_encoders():
    model = electra.Model(tiny()).eval()
    assert model.head.weight is model.embeddings.tokens.weight
    names = [name for name, _ in model.named_parameters()]
    assert [n for n in names if "tokens" in n or "positions" in n or ".ln." in n and "mlm" not in n] == [
        "embeddings.tokens.weight", "embeddings.positions.weight", "embeddings.ln.weight", "embeddings.ln.bias"]
    ids = torch.randint(5, 4096, (2, 10))
    positions, labels = torch.tensor([[3, 5], [2, 7]]), torch.tensor([[9, 9], [9, 9]])
    grads = []
    for output in (0, 1):  # the generator's logits, then the discriminator's: both move the one embedding table
        model.zero_grad()
        model(ids, positions=positions, labels=labels)[output].float().pow(2).mean().backward()
        grads.append(model.embeddings.tokens.weight.grad[ids.flatten()].abs().sum())
    assert grads[0] > 0 and grads[1] > 0


@pytest.mark.parametrize("size, disc_count, gen_count", [("small", 13_549_057, 4_620_026),
                                                         ("base", 109_483_009, 33_740_602)])
def test_paper_sizes_have_the_reference_parameter_counts(size, disc_count, gen_count):
    from transformers import ElectraConfig, ElectraForMaskedLM

    cfg = electra.PRESETS[size]
    with torch.device("meta"):
        model = electra.Model(cfg)
        g = cfg.gen_hidden
        reference = ElectraForMaskedLM(ElectraConfig(embedding_size=cfg.embed, hidden_size=g,
                                                     num_attention_heads=max(1, g // 64), intermediate_size=4 * g))
    params = dict(model.named_parameters())
    disc = sum(p.numel() for n, p in params.items() if n.startswith(("embeddings.", "discriminator.", "rtd.")))
    gen = sum(p.numel() for n, p in params.items() if n.startswith(("embeddings.", "generator.", "mlm.", "head.")))
    assert disc == disc_count  # ElectraForPreTraining
    assert gen == gen_count == sum(p.numel() for p in reference.parameters())  # ElectraForMaskedLM of the paper's size
    shared = sum(p.numel() for p in model.embeddings.parameters())
    assert model.num_params() == disc + gen - shared  # the shared embeddings once


def test_the_discriminator_loss_sends_no_gradient_into_the_generator(data):
    split = data[0]["train"]
    model = electra.Model(tiny())
    batch = electra.get_batch(split, np.arange(8), 0, tiny())
    _, metrics = electra.compute_loss(model, batch, tiny())
    metrics["rtd_loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith(("generator.", "mlm.")) or name == "head.bias":
            assert p.grad is None or not p.grad.any(), name
    assert model.discriminator.blocks[0].attn.qkv.weight.grad.any() and model.embeddings.ln.weight.grad.any()


def test_a_sample_equal_to_the_original_is_labelled_original():
    mask_id = 4
    ids = torch.tensor([[2, mask_id, 11, mask_id, 13, 3, 0]])  # [CLS] [MASK] b [MASK] d [SEP] [PAD]
    positions, labels = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[10, 11, 12, -100]])  # the last slot unused
    logits = torch.full((1, 4, 20), -1e4)
    logits[0, 0, 10] = logits[0, 1, 17] = logits[0, 2, 12] = logits[0, 3, 19] = 1e4  # right, wrong, right, unused
    fake, replaced = electra.sample_replacements(ids, positions, labels, logits)
    assert fake.tolist() == [[2, 10, 17, 12, 13, 3, 0]]  # [CLS] stays: the unused slot puts it back
    assert replaced.tolist() == [[False, False, True, False, False, False, False]]


def test_masking_is_85_mask_15_unchanged_and_never_random(data):
    split = data[0]["train"]
    ids = split["input_ids"].astype(np.int64)
    new, positions, labels = electra.mask_tokens(ids, np.arange(len(ids)), 3, split, tiny())
    chosen = labels != -100
    rows = np.broadcast_to(np.arange(len(ids))[:, None], positions.shape)[chosen]
    shown = new[rows, positions[chosen]]
    assert not np.isin(ids[rows, positions[chosen]], split["never_masked"]).any()
    assert np.all((shown == split["mask_id"]) | (shown == labels[chosen]))  # no third, random branch
    assert (shown == split["mask_id"]).mean() == pytest.approx(0.85, abs=0.02)
    assert chosen.sum() / (ids != 0).sum() == pytest.approx(0.15, abs=0.01)
    outside = np.ones_like(ids, dtype=bool)
    outside[rows, positions[chosen]] = False
    assert np.array_equal(new[outside], ids[outside])


def test_masking_counts_cls_and_sep_and_may_choose_unk(data):
    """The release sizes the mask on every real token, [CLS] and [SEP] included, and may choose [UNK]."""
    split = data[0]["train"]
    unk, cls_id, sep_id = split["special"][1:4]
    ids = np.zeros((40, 128), np.int64)
    ids[:, :10] = [cls_id, *[unk] * 8, sep_id]  # 10 real tokens: round(1.5) = 2 chosen, of the 8 that may be
    _, positions, labels = electra.mask_tokens(ids, np.arange(40), 0, split, tiny())
    assert ((labels != -100).sum(1) == 2).all() and (labels[labels != -100] == unk).all()


def test_initialisation_as_the_release():
    """Truncated N(0, 0.02) everywhere, but Glorot uniform (tf.layers.dense's default) for the 1-unit output and the
    embedding projections."""
    model = electra.Model(electra.PRESETS["small"])
    out, project = model.rtd.out.weight, model.discriminator.project.weight  # (1, 256), (256, 128)
    assert out.abs().max() <= (6 / 257) ** 0.5 and out.std() > 0.08
    assert project.abs().max() <= (6 / 384) ** 0.5 and project.std() > 0.06
    rest = model.rtd.dense.weight
    assert rest.abs().max() <= 0.04 and 0.015 < rest.std() < 0.019


def test_masks_are_dynamic(data):
    split = data[0]["train"]
    n = len(split["input_ids"])
    k = electra.epoch_order(n, 0, 0)[5]
    second = n + int(np.flatnonzero(electra.epoch_order(n, 0, 1) == k)[0])  # the same example, one epoch later
    a, b = electra.get_batch(split, [5], 0, tiny()), electra.get_batch(split, [second], 0, tiny())
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    assert not torch.equal(a["mlm_positions"], b["mlm_positions"])


def test_examples_are_one_or_two_segments_of_one_document(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=4000)  # sentences of 1-8 tokens, 100 to a document
    ends = np.cumsum(lengths)
    split = {"tokens": np.repeat(10 + np.arange(4000) // 100, lengths),  # every token says which document it is from
             "sentences": np.stack([ends - lengths, ends], 1),
             "documents": np.stack([np.arange(0, 4000, 100), np.arange(100, 4001, 100)], 1)}
    made = conftest.made_instances(electra, split, tiny(seq_len=32), {"pad": 0, "cls": 2, "sep": 3}, tmp_path,
                                   np.random.default_rng(1))
    rows, types = made["input_ids"], made["token_type_ids"]
    n = (rows != 0).sum(1)
    assert (rows[:, 0] == 2).all() and (rows[np.arange(len(rows)), n - 1] == 3).all()  # [CLS] ... [SEP]
    two = types.max(1) == 1
    assert 0.05 < 1 - two.mean() < 0.16  # one segment 10% of the time (and where a chunk is one sentence)
    for row, t, two_segments in zip(rows, types, two):
        text = row[(row > 3)]
        assert len(np.unique(text)) == 1  # never across a document boundary
        seps = np.flatnonzero(row == 3)
        assert len(seps) == 1 + two_segments and not t[:seps[0] + 1].any() and t[seps[0] + 1:seps[-1] + 1].all()
    assert np.median(n) > 0.8 * 32  # most examples are filled to the target length


def test_loss_is_generator_plus_fifty_times_discriminator(data):
    split = data[0]["train"]
    model = electra.Model(tiny())
    loss, metrics = electra.compute_loss(model, electra.get_batch(split, np.arange(8), 0, tiny()), tiny())
    torch.testing.assert_close(loss, metrics["mlm_loss"] + 50 * metrics["rtd_loss"])
    assert tiny().disc_weight == 50.0


def test_tiny_run_learns_to_detect_replaced_content_tokens(corpus, tokenizer_file, tmp_path, monkeypatch, capsys):
    from transformers import ElectraForPreTraining

    monkeypatch.setitem(electra.PRESETS, "tiny", tiny(eval_interval=400, log_interval=50, eval_examples=256))
    shutil.copy(tokenizer_file, tmp_path / "tokenizer.json")
    args = ["--train", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--data", str(corpus),
            "--steps", "400", "--export", str(tmp_path)]
    assert electra.run(electra.main, args) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert last["val_mlm_loss"] < first["val_mlm_loss"] - 2.0 and last["mlm_loss"] < 5.5  # the generator has learned
    # ROC AUC over content tokens only: learning that [CLS] and [SEP] are never replaced scores 0.5 there, and
    # the 85% of tokens that are original cannot carry it as they carry accuracy. Training batches of the last 50
    # steps: the test corpus's three validation documents are topics the 57 training ones never cover.
    assert first["val_auc"] < 0.6 and last["auc"] > 0.7
    assert last["rtd_loss"] < last["const_loss"] - 0.05  # below the best constant guess
    out = capsys.readouterr().out
    assert "ROC AUC, content tokens" in out and "uniform random" in out  # the end-of-run report
    assert "return the value of the list , or none if the if is empty ." in out
    # --export writes the discriminator in the Hugging Face layout: transformers reads it, and gives the same logits
    mode = (tmp_path / "discriminator" / "model.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "discriminator" / "config.json").stat().st_mode & 0o777  # as any file it writes
    hf, info = ElectraForPreTraining.from_pretrained(tmp_path / "discriminator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours = electra.model_from_checkpoint(tmp_path / "ckpt.pt").eval()
    ids = torch.tensor([[2, 50, 60, 70, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours.detect(ids), hf.eval()(ids).logits, atol=1e-5, rtol=0)
    assert electra.run(electra.main, ["--from-pretrained", str(tmp_path / "discriminator"), "--detect", "a b c"]) == 0


@pytest.mark.floats
def test_resume_continues_exactly(corpus, tokenizer_file, tmp_path, monkeypatch):
    monkeypatch.setitem(electra.PRESETS, "tiny", tiny(eval_interval=2, log_interval=1, eval_examples=32))
    for name, stops in (("resumed", [2, 4]), ("straight", [4])):  # within the 50 warmup steps: the same schedule
        shutil.copytree(tokenizer_file.parent, tmp_path / name)
        for i, steps in enumerate(stops):
            argv = ["--train", "--size", "tiny", "--device", "cpu", "--out", str(tmp_path / name),
                    "--data", str(corpus), "--steps", str(steps), *(["--resume"] if i else [])]
            electra.train(electra.build_parser().parse_args(argv))
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("resumed", "straight")]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [0, 1, 2, 3, 4]
    for a, b in zip(*rows):  # the samples too: the generator's random numbers are part of the checkpoint
        for k in ("loss", "rtd_loss", "replaced", "lr", "val_loss", "val_recall"):
            assert a.get(k) == pytest.approx(b.get(k), abs=1e-6), (a["step"], k)


@pytest.mark.parametrize("argv, message", [
    (["--detect", "x", "--from-pretrained", "./MISSING"], "error: --from-pretrained MISSING: no readable config.json"),
    (["--train", "--size", "huge"], "error: --size 'huge' is unknown"),
])
def test_bad_input_gives_one_clear_line(argv, message, tmp_path, capsys):
    assert electra.run(electra.main, argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_generator_of_another_shape_is_refused(reference, tmp_path, capsys):
    _, _, disc_path, gen_path = reference
    config = json.loads((gen_path / "config.json").read_text())
    shutil.copytree(gen_path, tmp_path / "gen")
    (tmp_path / "gen" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(electra.UserError, match="not a generator"):
        electra.Model.from_pretrained(disc_path, generator=tmp_path / "gen")


def test_diff_against_bert_stays_within_budget():
    changed = conftest.changed_lines("bert.py", "electra.py")
    assert changed <= DIFF_BUDGET, f"diff bert.py electra.py changes {changed} lines (budget {DIFF_BUDGET})"


def test_a_checkpoint_of_another_script_is_named(tmp_path):
    torch.save({"script": "gpt"}, tmp_path / "ckpt.pt")
    with pytest.raises(electra.UserError, match="is not an electra.py checkpoint"):
        electra.load_checkpoint(tmp_path / "ckpt.pt")
