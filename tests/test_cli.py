"""The command line, end to end under the ci profile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vqlesson.__main__ import main


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
