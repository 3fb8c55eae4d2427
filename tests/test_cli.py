"""The command line, end to end under the ci profile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vqlesson.cli import main


def test_data_preview_writes_its_files(tmp_path, capsys):
    out = tmp_path / "preview"
    code = main(["data-preview", "--data", "synthetic", "--profile", "ci", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "data.json").read_text())
    assert summary["source"] == "synthetic" and summary["profile"] == "ci"
    assert sum(summary["class_counts"]["train"].values()) == 64
    assert (out / "training_batch.png").stat().st_size > 1000
    assert "synthetic: 64 train" in capsys.readouterr().out


def test_bad_data_source_is_a_clear_error(tmp_path, capsys):
    code = main(["data-preview", "--data", "isic2016", "--data-root", str(tmp_path / "none"),
                 "--profile", "ci", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "data_download.sh" in err and "SyntheticLesions" in err


def test_help_documents_the_commands():
    result = subprocess.run([sys.executable, "-m", "vqlesson", "data-preview", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--data", "--profile", "--out", "folder:PATH"):
        assert option in result.stdout
    with pytest.raises(SystemExit):
        main(["no-such-command"])


def test_train_vqvae_end_to_end_then_resume_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-vqvae", "--data", "synthetic", "--profile", "ci", "--out", str(out),
            "--dataset-size", "32", "--epochs", "1"]
    assert main(args) == 0
    for name in ("checkpoint.pt", "metrics.json", "reconstructions.png", "codebook_usage.png",
                 "training_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "metrics.json").read_text())
    test = summary["test"]
    assert summary["epochs"] == 1 and summary["config"]["codebook_size"] == 64
    assert 1.0 <= test["perplexity"] <= 64 and 0 < test["active_fraction"] <= 1
    assert test["bits_per_image"] == 8 * 8 * 6  # 32 px / 4 = 8x8 codes of log2(64) = 6 bits
    assert test["psnr"] > 5

    # --resume continues the same run to 2 epochs: one more epoch, same config, history kept
    assert main(args[:-1] + ["2", "--resume"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["epochs"] == 2

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data", "synthetic",
                 "--profile", "ci", "--dataset-size", "32", "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "psnr" in printed and "VQVAE" in printed
    evaluated = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert abs(evaluated["psnr"] - resumed["test"]["psnr"]) < 1e-6


def test_resume_with_other_settings_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train-vqvae", "--data", "synthetic", "--profile", "ci", "--out", str(out),
            "--dataset-size", "16", "--epochs", "1"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base[:-1] + ["2", "--resume", "--optimizer", "sgd"]) == 2
    assert "optimizer" in capsys.readouterr().err


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--profile", "ci"]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_train_vqvae2_end_to_end(tmp_path, capsys):
    out = tmp_path / "run2"
    assert main(["train-vqvae", "--model", "vqvae2", "--data", "synthetic", "--profile", "ci",
                 "--out", str(out), "--dataset-size", "32"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"] == "VQVAE2"
    test = summary["test"]
    # 32 px: top grid 4x4 and bottom grid 8x8, K = 64 each: (16 + 64) * 6 bits
    assert test["bits_per_image"] == (16 + 64) * 6
    assert 1 <= test["quantizer_top_perplexity"] <= 64 and 1 <= test["quantizer_bottom_perplexity"] <= 64
    assert (out / "codebook_usage.png").is_file() and (out / "training_curves.png").is_file()
    printed = capsys.readouterr().out
    assert "quantizer_top_perplexity" in printed and "top grid (4, 4)" in printed


def test_a_prior_checkpoint_where_a_vqvae_is_expected_is_a_clear_error(tmp_path, capsys):
    from vqlesson.checkpoint import save_checkpoint
    from vqlesson.configs import prior_config_for
    from vqlesson.pixelcnn_prior import PixelCNNPrior

    run = tmp_path / "run"
    prior_path = save_checkpoint(run / "prior.pt", PixelCNNPrior(prior_config_for("ci", 64)))
    assert main(["evaluate", "--checkpoint", str(prior_path), "--data", "synthetic",
                 "--profile", "ci"]) == 2
    err = capsys.readouterr().err
    assert "PixelCNNPrior" in err and "checkpoint.pt" in err and "Traceback" not in err

    (run / "checkpoint.pt").write_bytes(prior_path.read_bytes())  # a prior copied by mistake
    assert main(["train-vqvae", "--data", "synthetic", "--profile", "ci", "--out", str(run),
                 "--resume", "--dataset-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "PixelCNNPrior" in err and "--resume" in err


def test_on_error_skip_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        Image.new("RGB", (40, 40), (10 * i, 100, 150)).save(folder / f"img_{i:02d}.png")
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    args = ["data-preview", "--data", f"folder:{folder}", "--profile", "ci",
            "--out", str(tmp_path / "preview")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and "empty.jpg" in err and "--on-error skip" in err
    assert main([*args, "--on-error", "skip"]) == 0
    assert (tmp_path / "preview" / "training_batch.png").is_file()
