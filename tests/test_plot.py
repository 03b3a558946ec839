"""plot.py: the curves of one or more runs, as a PNG, and one error line for what it cannot draw."""

import json

import pytest

import plot

pytest.importorskip("matplotlib")


def write_run(folder, accuracies=True):
    folder.mkdir()
    records = [{"step": 0, "tokens": 0, "val_loss": 9.0, **({"val_mlm_acc": 0.0} if accuracies else {})}]
    for step in range(10, 101, 10):
        records.append({"step": step, "tokens": step * 4096, "loss": 9 - step / 20, "lr": 1e-3,
                        **({"mlm_acc": step / 200, "auc": 0.5 + step / 400} if accuracies else {})})
        if step % 50 == 0:
            records.append({"step": step, "tokens": step * 4096, "val_loss": 9.2 - step / 20, **({"val_mlm_acc": step / 210} if accuracies
                                                                          else {})})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 11')  # cut
    return folder


def test_one_run_and_two_runs_overlaid(tmp_path, capsys):
    bert, gpt = write_run(tmp_path / "bert"), write_run(tmp_path / "gpt", accuracies=False)
    assert plot.cli([str(bert)]) == 0
    assert (bert / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"the curves: {bert / 'curves.png'}\n"
    fig = plot.plot({"bert": plot.read_metrics(bert), "gpt": plot.read_metrics(gpt)}, x="tokens")
    losses, scores = ([line.get_label() for line in ax.get_lines()] for ax in fig.axes)
    assert losses == ["bert loss", "bert val_loss", "gpt loss", "gpt val_loss"]
    assert scores == ["bert auc", "bert mlm_acc", "bert val_mlm_acc"]
    val = fig.axes[0].get_lines()[1]
    assert list(val.get_xdata()) == [0, 50 * 4096, 100 * 4096] and list(val.get_ydata()) == pytest.approx([9.0, 6.7, 4.2])
    assert plot.cli([str(bert), str(gpt), "--x", "tokens", "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").stat().st_size > 10_000


def test_what_it_cannot_draw_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    old = write_run(tmp_path / "old")
    (old / "metrics.jsonl").write_text('{"step": 10, "loss": 3.0}\n')
    for argv, message in [([str(tmp_path / "none")], "no metrics.jsonl"),
                          ([str(tmp_path / "empty")], "holds no records yet"),
                          ([str(old), "--x", "tokens"], "counts no tokens (an older run)"),
                          ([str(old), "--out", str(tmp_path / "no" / "such" / "dir.png")], "cannot write")]:
        assert plot.cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
