"""The train-prior and sample commands, end to end under the ci profile."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vqlesson.cli import main
from vqlesson.checkpoint import load_checkpoint

DATA = ["--data", "synthetic", "--profile", "ci", "--dataset-size", "16"]
GATED = ["--prior-arch", "gated"]  # the default is the transformer


# One torch thread for every test here (see the ``one_thread`` fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def train_vqvae(out, *extra) -> None:
    assert main(["train-vqvae", *DATA, "--out", str(out), "--epochs", "1", *extra]) == 0


def test_train_prior_then_sample_a_vqvae_run(tmp_path, capsys):
    run = tmp_path / "run"
    train_vqvae(run)
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--n", "4"]) == 2
    assert "train-prior --vqvae" in capsys.readouterr().err  # no prior trained yet

    assert main(["train-prior", "--vqvae", str(run), *DATA, "--bottom-arch", "gated"]) == 2
    assert "one-level VQ-VAE" in capsys.readouterr().err  # a VQ-VAE has no bottom prior
    assert main(["train-prior", "--vqvae", str(run), *DATA, *GATED, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "bits per code" in printed and "sample --run" in printed
    for name in ("codes_train.pt", "codes_val.pt", "codes_test.pt", "prior.pt", "prior_best.pt",
                 "prior_metrics.json", "prior_curves.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    summary = json.loads((run / "prior_metrics.json").read_text())
    entry = summary["priors"]["codes"]
    assert summary["vqvae"] == "VQVAE" and summary["profile"] == "ci"
    assert entry["epochs"] == 2 and entry["best_epoch"] in (1, 2)
    assert entry["config"]["codebook_size"] == 64 and entry["config"]["channels"] == 16
    assert entry["model"] == "PixelCNNPrior" and entry["config"]["position"]
    for split in ("train", "val", "test"):
        bits = summary[split]["bits_per_code"]
        assert 0 < bits < 8  # about log2 64 = 6 bits after two short epochs
        # 8x8 codes for a 3x32x32 image
        assert summary[split]["bits_per_dim"] == pytest.approx(bits * 64 / (3 * 32 * 32))
        assert entry[split]["bits_per_code"] == pytest.approx(bits)
    checkpoint = load_checkpoint(run / "prior.pt")
    assert checkpoint.epoch == 2 and checkpoint.extra["classes"] == ["benign", "malignant"]
    codes = torch.load(run / "codes_train.pt", weights_only=True)
    assert codes["levels"]["codes"].shape == (16, 8, 8)

    # a second run reuses the current code files and resumes the finished prior
    stamps = {p.name: p.stat().st_mtime_ns for p in run.glob("codes_*.pt")}
    assert main(["train-prior", "--vqvae", str(run), *DATA, *GATED, "--epochs", "2", "--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("codes_*.pt")} == stamps
    again = json.loads((run / "prior_metrics.json").read_text())
    assert again["test"]["bits_per_code"] == pytest.approx(summary["test"]["bits_per_code"])

    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--n", "4", "--seed", "3"]) == 0
    assert "sampled 4 images" in capsys.readouterr().out
    grid = Image.open(run / "samples.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # 2x2 images of 32 px, 2 px padding
    out = tmp_path / "other" / "s.png"
    assert main(["sample", "--run", str(run), "--n", "4", "--seed", "3", "--out", str(out),
                 "--temperature", "0.5", "--top-k", "5"]) == 0
    assert Image.open(out).size == grid.size
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--label", "malignant"]) == 2
    assert "--label-conditional" in capsys.readouterr().err
    assert main(["sample", "--run", str(run), "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err

    # the VQ-VAE is trained again (other weights): its old codes and prior are stale
    train_vqvae(run, "--lr", "3e-3")
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--n", "4"]) == 2
    assert "other VQ-VAE weights" in capsys.readouterr().err
    assert main(["train-prior", "--vqvae", str(run), *DATA, *GATED, "--epochs", "1", "--resume"]) == 2
    assert "other codes" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("codes_*.pt")} != stamps  # rebuilt
    assert main(["train-prior", "--vqvae", str(run), *DATA, *GATED, "--epochs", "1"]) == 0
    assert main(["sample", "--run", str(run), "--n", "4"]) == 0


def test_label_conditional_priors_of_a_vqvae2_run(tmp_path, capsys):
    run = tmp_path / "run2"
    train_vqvae(run, "--model", "vqvae2")
    assert main(["train-prior", "--vqvae", str(run), *DATA, "--epochs", "1",
                 "--label-conditional", "--dropout", "0.1"]) == 0
    for name in ("prior_top.pt", "prior_bottom.pt", "prior_top_best.pt", "prior_bottom_best.pt",
                 "prior_curves.png", "codes_test.pt"):
        assert (run / name).is_file(), name
    assert not (run / "prior.pt").exists()
    summary = json.loads((run / "prior_metrics.json").read_text())
    top, bottom = summary["priors"]["top"], summary["priors"]["bottom"]
    assert summary["vqvae"] == "VQVAE2"
    assert top["config"]["num_classes"] == 2 and bottom["config"]["num_classes"] == 2
    assert top["config"]["cond_codebook_size"] == 0 and bottom["config"]["cond_codebook_size"] == 64
    assert top["config"]["dropout"] == 0.1
    assert top["model"] == bottom["model"] == "TransformerPrior"  # the default --prior-arch
    assert top["config"]["position_grid"] == 4 and bottom["config"]["position_grid"] == 8
    test = summary["test"]
    # both levels together: 4x4 top and 8x8 bottom codes for a 3x32x32 image
    assert test["bits_per_dim"] == pytest.approx(
        top["test"]["bits_per_dim"] + bottom["test"]["bits_per_dim"])
    assert test["bits_per_code"] == pytest.approx(
        (top["test"]["bits_per_code"] * 16 + bottom["test"]["bits_per_code"] * 64) / 80)
    assert test["bits_per_dim"] == pytest.approx(test["bits_per_code"] * 80 / (3 * 32 * 32))

    capsys.readouterr()
    out = tmp_path / "malignant.png"
    assert main(["sample", "--run", str(run), "--n", "2", "--label", "malignant",
                 "--out", str(out)]) == 0
    assert "label malignant" in capsys.readouterr().out
    assert Image.open(out).size == (2 * 32 + 3 * 2, 32 + 2 * 2)
    assert main(["sample", "--run", str(run), "--n", "2"]) == 0
    assert "classes in turn" in capsys.readouterr().out  # conditional priors without --label
    assert main(["sample", "--run", str(run), "--n", "2", "--label", "nevus"]) == 2
    err = capsys.readouterr().err
    assert "unknown label 'nevus'" in err and "benign, malignant" in err

    # the paper's split: a self-attention top prior, a conditioned PixelCNN bottom prior
    assert main(["train-prior", "--vqvae", str(run), *DATA, "--epochs", "1",
                 "--bottom-arch", "gated"]) == 0
    summary = json.loads((run / "prior_metrics.json").read_text())
    top, bottom = summary["priors"]["top"], summary["priors"]["bottom"]
    assert top["model"] == "TransformerPrior" and bottom["model"] == "PixelCNNPrior"
    assert bottom["config"]["cond_codebook_size"] == 64 and bottom["config"]["position"]
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(out)]) == 0


def test_missing_runs_are_clear_errors(tmp_path, capsys):
    assert main(["train-prior", "--vqvae", str(tmp_path / "none"), *DATA]) == 2
    err = capsys.readouterr().err
    assert "no VQ-VAE run" in err and "train-vqvae --out" in err
    assert main(["sample", "--run", str(tmp_path / "none")]) == 2
    assert "train-vqvae --out" in capsys.readouterr().err


def test_help_documents_both_commands(capsys):
    for command, options in (("train-prior", ("--vqvae", "--label-conditional", "--dropout",
                                              "--resume", "--epochs", "prior_metrics.json")),
                             ("sample", ("--run", "--n", "--temperature", "--top-k", "--label",
                                         "--seed", "--out"))):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (command, option)
