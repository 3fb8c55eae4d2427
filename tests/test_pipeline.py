"""`python -m vqlesson pipeline` end to end under the `ci` profile, stopped and resumed."""

from __future__ import annotations

import json
import re

import pytest

from vqlesson.cli import pipeline
from vqlesson.cli import main

COMMON = ["--data", "synthetic", "--profile", "ci", "--threads", "1", "--num-samples", "4",
          "--device", "cpu"]


GIVEN_T = ["--temperature", "1"]  # a given temperature: no choice on the validation split


def stages_done(run) -> list[str]:
    return list(json.loads((run / "pipeline.json").read_text())["stages"])


def linked_figures(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_pipeline_stops_resumes_and_writes_its_report(tmp_path, monkeypatch, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["pipeline", *COMMON, *GIVEN_T, "--out", str(run), "--stop-after", "prior"]) == 0
    assert stages_done(run) == ["vqvae", "prior"]
    assert (run / "prior.pt").is_file() and not (run / "samples.png").exists()
    trained = {name: (run / name).stat().st_mtime_ns for name in ("checkpoint.pt", "prior.pt")}

    # A crash in the middle of the samples stage: the finished stages stay finished.
    def crash(ctx):
        (ctx.out / "samples.png").write_bytes(b"half-written")
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(pipeline, "_stage_samples", crash)
    with pytest.raises(RuntimeError, match="went away"):
        main(["pipeline", *COMMON, *GIVEN_T, "--out", str(run)])
    assert stages_done(run) == ["vqvae", "prior", "temperature"]
    monkeypatch.undo()

    capsys.readouterr()
    assert main(["pipeline", *COMMON, *GIVEN_T, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "vqvae: finished earlier, skipped" in out and "prior: finished earlier, skipped" in out
    assert stages_done(run) == list(pipeline.STAGE_NAMES)
    assert json.loads((run / "temperature.json").read_text()) == {"temperature": 1.0,
                                                                  "chosen": False}
    # Nothing was trained again.
    assert {name: (run / name).stat().st_mtime_ns for name in trained} == trained
    assert (run / "samples.png").read_bytes()[:4] == b"\x89PNG"  # the half-written file was redone

    report = (run / "report.md").read_text()
    assert "| VQ-VAE test PSNR (dB) |" in report and "| prior NLL, test" in report
    figures = linked_figures(report)
    assert {"samples.png", "analysis_near_copies.png", "analysis_surprise.png",
            "analysis_usage.png", "analysis_worst.png"} <= set(figures)
    assert all((run / name).is_file() for name in figures)
    analysis = json.loads((run / "analysis.json").read_text())
    assert [r["name"] for r in analysis["temperatures"]] == ["T = 0.3", "T = 0.5", "T = 0.7", "T = 1"]
    assert all(0.0 <= r["near_copy_fraction"] <= 1.0 for r in analysis["temperatures"])
    assert set(analysis["reconstruction"]["test"]) >= {"all", "benign", "malignant"}
    # Do the samples look like lesions? ABCD features of samples against real test lesions.
    assert "analysis_abcd.png" in figures and "## Do the samples look like lesions?" in report
    assert set(analysis["realism"]["wasserstein"]) >= {"asymmetry", "border", "colour", "score"}
    assert analysis["realism"]["summaries"]["b"]["all"]["n"] == 16  # the ci test split
    # ... and the two-sample tests and the vignette beside them (16 samples: the test split's size).
    assert {k: t["n"] for k, t in analysis["two_sample"].items()} == {
        "samples vs reconstructions": 16, "reconstructions vs real": 16}
    assert all(0.0 <= t["accuracy"] <= 1.0 for t in analysis["two_sample"].values())
    assert set(analysis["vignette"]) == set(analysis["lesion_found"]) == {
        "samples", "reconstructions", "real"}
    assert "| two-sample test accuracy, samples vs reconstructions" in report
    assert "| near-black outside / inside the circle: samples; real |" in report

    # A finished run is not redone; a missing output makes its stage run again.
    (run / "report.md").unlink()
    assert main(["pipeline", *COMMON, *GIVEN_T, "--out", str(run)]) == 0
    assert (run / "report.md").is_file()
    assert (run / "checkpoint.pt").stat().st_mtime_ns == trained["checkpoint.pt"]


def test_pipeline_refuses_other_options_for_an_existing_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    state = {"options": {**{k: None for k in pipeline.RUN_OPTIONS}, "data": "synthetic",
                         "profile": "ci", "seed": 0, "model": "vqvae", "label_conditional": False,
                         "temperature": 1.0},
             "stages": {"vqvae": {"seconds": 1.0}}}
    (run / "pipeline.json").write_text(json.dumps(state))
    assert main(["pipeline", *COMMON, "--out", str(run), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "--seed 0 (now 3)" in err and "another --out" in err
    assert json.loads((run / "pipeline.json").read_text()) == state  # nothing overwritten


def test_pipeline_with_a_vqvae2_and_class_conditional_priors(tmp_path, one_thread):
    run = tmp_path / "run2"
    assert main(["pipeline", *COMMON, "--out", str(run), "--model", "vqvae2",
                 "--label-conditional"]) == 0
    analysis = json.loads((run / "analysis.json").read_text())
    assert set(analysis["usage"]) == {"top", "bottom"}
    assert set(analysis["prior"]) == {"prior_top", "prior_bottom"}
    report = (run / "report.md").read_text()
    assert "top: perplexity train / test" in report and "bottom: perplexity" in report
    assert set(analysis["realism"]["by_class"]) <= {"benign", "malignant"}  # per class
    assert all((run / name).is_file() for name in linked_figures(report))
    # No --temperature: it was chosen on the validation split by the realism measure, and every
    # later stage sampled at it.
    chosen = json.loads((run / "temperature.json").read_text())
    assert chosen["chosen"] and chosen["temperature"] in (0.8, 0.9, 1.0)
    assert [r["temperature"] for r in chosen["rows"]] == [0.8, 0.9, 1.0]
    assert chosen["n"] == 16  # the ci validation split
    assert chosen["temperature"] in [r["temperature"] for r in analysis["temperatures"]]
    assert "## The sampling temperature, chosen on the validation split" in report
    assert f"- sampling temperature: {chosen['temperature']:g} (chosen" in report
