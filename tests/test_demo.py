"""`python -m spikeops demo`: each task's --quick path end to end (report, plots, JSON, no
temporary folder left), the atomic write, and the errors for bad options."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("sklearn", reason="the demo needs scikit-learn (pip install spikeops[demo])")
pytest.importorskip("matplotlib", reason="the demo needs matplotlib (pip install spikeops[demo])")
pytest.importorskip("tqdm", reason="the demo needs tqdm (pip install spikeops[demo])")

from spikeops import demo  # noqa: E402
from spikeops.__main__ import main as cli_main  # noqa: E402

PNGS = ("curves.png", "firing_rates.png", "energy.png", "speedup.png")


def _run(tmp_path, *extra):
    out = tmp_path / "report"
    rc = demo.main(["--quick", "--no-progress", "--threads", "2", "--timing-steps", "1",
                    "--out", str(out), *extra])
    return rc, out


def _check_report(tmp_path, out):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"], \
        "a temporary folder was left beside the report"
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    md = (out / "report.md").read_text()
    for section in ("## Result", "## Kernels against the reference path", "## Firing rates",
                    "## Energy estimate", "curves.png", "energy.png"):
        assert section in md
    metrics = json.loads((out / "metrics.json").read_text())
    t = metrics["timing"]
    assert t["kernels"]["median_s"] > 0 and t["reference"]["median_s"] > 0
    assert math.isclose(t["speedup"], t["reference"]["median_s"] / t["kernels"]["median_s"])
    assert metrics["firing_rates"], "no spiking layer was measured"
    assert all(0 <= r["firing_rate"] <= 1 for r in metrics["firing_rates"].values())
    energy = json.loads((out / "energy.json").read_text())
    assert energy["layers"] and energy["totals"]["energy_pj"] > 0
    return metrics, md


@pytest.mark.parametrize("task", ["digits", "lm", "points"])
def test_quick_task_end_to_end(tmp_path, task, capsys):
    torch.set_num_threads(2)
    rc, out = _run(tmp_path, "--task", task)
    assert rc == 0
    metrics, md = _check_report(tmp_path, out)
    assert metrics["task"] == task and metrics["quick"] is True
    printed = capsys.readouterr().out
    assert "report:" in printed and str(out) in printed
    if task == "lm":
        bpc = metrics["final"]["bits_per_char"]
        assert math.isfinite(bpc) and 0 < bpc < 10
        assert metrics["timing"]["kernels"]["tokens_per_s"] > 0
        assert "bits per character" in md and "tokens/s" in md
    else:
        assert 0 <= metrics["final"]["accuracy"] <= 1
        assert "test accuracy" in md


def test_quick_digits_with_nm_and_other_model(tmp_path):
    rc, out = _run(tmp_path, "--model", "spikformer", "--nm", "2:4")
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "spikformer" and metrics["nm"] == "2:4"


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    from spikeops.demo import report

    def broken(folder, *args):
        (folder / "report.md").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--task", "imagenet"], "--task: unknown task 'imagenet'"),
    (["--model", "resnet50"], "--model: 'resnet50' is not a spikeops model"),
    (["--model", "spikegpt"], "--model: 'spikegpt' is not a model of this task"),
    (["--task", "points", "--model", "spikformer"], "task 'points' takes one of"),
    (["--size", "huge"], "--size: unknown configuration 'huge'"),
    (["--device", "tpu"], "--device: expected cpu or cuda"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["--batch-size", "-3"], "--batch-size: expected an integer >= 1"),
    (["--lr", "nan"], "--lr: expected a positive number"),
    (["--nm", "3-4"], "--nm: nm: expected"),
    (["--nm", "2:3"], "--nm: m: expected a power of two"),
])
def test_bad_options(tmp_path, capsys, argv, message):
    assert demo.main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_gpu(tmp_path, capsys):
    assert demo.main(["--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "--device cuda: no CUDA GPU is available" in capsys.readouterr().err


def test_unwritable_or_existing_results_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert demo.main(["--quick", "--out", str(blocker / "r")]) == 2
    assert "--out: cannot write the results folder" in capsys.readouterr().err
    existing = tmp_path / "there"
    existing.mkdir()
    assert demo.main(["--quick", "--out", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "there"]
    assert list(existing.iterdir()) == []


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--task", "--model", "--size", "--T", "--nm", "--epochs", "--batch-size",
                "--lr", "--seed", "--device", "--threads", "--timing-steps", "--out",
                "--quick", "--no-progress"):
        assert opt in text
    assert text.count("default") >= 12


def test_cli_lists_demo(capsys):
    assert cli_main([]) == 0
    assert "demo" in capsys.readouterr().out
