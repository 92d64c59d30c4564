"""Every command given a file where it expects a folder, and a folder where it expects a file: one line naming the
path and what it is, exit 2, no traceback, before any work."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

import prunekit
from prunekit.cli.commands import COMMANDS
from prunekit.cli.main import main

CKPT = "{ckpt}"  # placeholders, filled per test with real paths
FILE = "{file}"
DIR = "{dir}"

# Commands that take a trained checkpoint first: (command, its leading arguments).
LEAD = {"train": [], "eval": [CKPT], "prune": ["--epochs", "0"], "sensitivity": [CKPT], "compare": [],
        "info": [CKPT], "size": [CKPT], "export": [CKPT], "demo": []}

FILE_FOR_FOLDER = [(c, [*LEAD[c], "--out", FILE], "is an existing file") for c in LEAD] + [
    (c, [*LEAD[c], "--data", FILE], "is a file, not a folder") for c in ("train", "eval", "prune", "sensitivity",
                                                                          "compare")] + [
    ("train", ["--out", FILE + "/run"], "is a file, so nothing can be made under it")]
FOLDER_FOR_FILE = [(c, [DIR], "is a folder") for c in ("eval", "sensitivity", "info", "size", "export")] + [
    ("prune", ["--model", DIR], "is a folder"), ("compare", ["--model", DIR], "is a folder"),
    ("train", ["--weights", DIR], "is a folder"), ("prune", ["--model", "vgg_tiny", "--weights", DIR], "is a folder"),
    ("export", [CKPT, "--onnx", DIR], "is a folder"), ("demo", ["--config", DIR], "is a folder"),
]


def test_the_tables_cover_every_command():
    assert set(LEAD) == {c.name for c in COMMANDS}
    assert {c for c, _, _ in FOLDER_FOR_FILE} == set(LEAD)


@pytest.fixture
def paths(tmp_path) -> dict:
    ckpt = tmp_path / "model.safetensors"
    prunekit.save(prunekit.create_model("vgg_tiny", 3), ckpt, data={"input_size": 16})
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    return {"ckpt": str(ckpt), "file": str(tmp_path / "a_file.txt"), "dir": str(tmp_path / "a_folder")}


def _run(command: str, args: List[str], paths: dict, capsys) -> tuple:
    argv = [command] + [a.format(**paths) for a in args]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command, args, needle", FILE_FOR_FOLDER + FOLDER_FOR_FILE,
                         ids=[f"{c}:{' '.join(a)}" for c, a, _ in FILE_FOR_FOLDER + FOLDER_FOR_FILE])
def test_wrong_kind_of_path_is_one_line(command, args, needle, paths, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a job that wrongly started would write under ./runs here
    code, err = _run(command, args, paths, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    named = paths["file"] if any(FILE in a for a in args) else paths["dir"]
    assert needle in lines[0] and Path(named).name in lines[0] and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
