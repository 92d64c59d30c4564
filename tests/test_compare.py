"""prunekit compare: every criterion gets the same base, channel counts and budget; cells resume; bad input is
refused before any training."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from prunekit.config import CompareOptions
from prunekit.compare import key_of
from prunekit.jobs.compare import compare_job
from prunekit.errors import ConfigError


def _opts(folder, out, **kw) -> CompareOptions:
    base = dict(model="vgg_tiny", data=str(folder), image_size=16, criteria=["l1", "random"], reduce=["macs=0.5"],
                seeds=[0], base_epochs=1, finetune_epochs=1, batch_size=8, latency=False, progress=False,
                val_frac=0.2, out=out)
    return CompareOptions(**{**base, **kw})


def test_compare_runs_every_cell_once_with_the_same_counts_and_resumes(tiny_folder, tmp_path):
    opts = _opts(tiny_folder, tmp_path / "cmp")
    res = compare_job(opts)
    cells = sorted((tmp_path / "cmp" / "cells").glob("*.json"))
    assert res["cells"] == res["ran"] == 3 and len(cells) == 3
    rows = {json.loads(p.read_text())["criterion"]: json.loads(p.read_text()) for p in cells}
    assert set(rows) == {"unpruned", "l1", "random"}
    assert rows["l1"]["kept"] == rows["random"]["kept"]  # uniform scope: only which channels differs
    assert rows["l1"]["removed"] != rows["random"]["removed"]
    assert rows["l1"]["macs_reduction"] == pytest.approx(0.5, abs=0.02)
    assert rows["l1"]["params"] < rows["unpruned"]["params"]
    assert {r["criterion"] for r in res["table"]} == {"unpruned", "l1", "random"}
    assert (tmp_path / "cmp" / "criteria_results.md").is_file()
    assert (tmp_path / "cmp" / "criteria_tradeoff.png").is_file()
    assert len(list((tmp_path / "cmp" / "bases").glob("*.safetensors"))) == 1  # one base for every criterion
    # per-epoch records of every training: the base's and each cell's fine-tuning, side by side for TensorBoard
    logs = tmp_path / "cmp" / "logs"
    for crit, target in (("unpruned", "none"), ("l1", "macs=0.5"), ("random", "macs=0.5")):
        cell = logs / key_of(opts, crit, target, 0)
        lines = (cell / "history.csv").read_text().splitlines()
        assert len(lines) == 2 and lines[1].startswith("finetune,1,"), lines
        assert list((cell / "tb" / "finetune").glob("events.out.tfevents.*"))
    (base_log,) = [d for d in logs.iterdir() if d.name.startswith("base-")]
    assert (base_log / "history.csv").read_text().splitlines()[1].startswith("train,1,")
    assert compare_job(opts)["ran"] == 0  # a rerun skips finished cells
    cells[0].unlink()  # as if stopped before that cell finished
    again = compare_job(opts)
    assert again["ran"] == 1 and json.loads(cells[0].read_text())["test_acc"] == pytest.approx(
        rows[json.loads(cells[0].read_text())["criterion"]]["test_acc"])  # same base, same seed: same result


def test_a_trained_checkpoint_is_the_base_of_every_cell(tiny_folder, tmp_path):
    from prunekit.config import TrainOptions
    from prunekit.jobs.train import train_job

    trained = train_job(TrainOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=1, batch_size=8,
                                     val_frac=0.2, out=tmp_path / "base", progress=False))["checkpoint"]
    res = compare_job(_opts(tiny_folder, tmp_path / "cmp", model=trained, image_size=32, criteria=["l1"],
                            seeds=[0, 1], base_epochs=5))
    rows = [json.loads(p.read_text()) for p in (tmp_path / "cmp" / "cells").glob("*.json")]
    assert res["ran"] == 4 and not (tmp_path / "cmp" / "bases").exists()  # nothing trained from scratch
    assert {r["image_size"] for r in rows} == {16} and {r["base_epochs"] for r in rows} == {0}  # the checkpoint's
    unpruned = [r for r in rows if r["criterion"] == "unpruned"]
    assert len(unpruned) == 2 and all(r["params"] == unpruned[0]["params"] for r in unpruned)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        compare_job(_opts(tiny_folder, tmp_path / "x", model=str(tmp_path / "missing.safetensors")))


@pytest.mark.parametrize("kw,match", [({"criteria": ["l1", "nosuch"]}, "unknown criterion 'nosuch'.*attention_scale"),
                                      ({"reduce": ["macs=2"]}, "macs=2"),
                                      ({"criteria": ["attention_budget"], "attention_sparsity": 0}, "sparsity > 0"),
                                      ({"criteria": ["attention_budget"], "scope": "global"}, "scope uniform")])
def test_bad_input_is_refused_before_training(tiny_folder, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        compare_job(_opts(tiny_folder, tmp_path / "bad", **kw))
    assert not (tmp_path / "bad").exists()


def test_cell_names_stay_those_of_the_committed_sweeps():
    """The benchmark script resumes the sweeps under results/: a renamed cell would be run again."""
    args = SimpleNamespace(model="torchvision/resnet18", data="/x/ucmerced", image_size=64, scope="uniform",
                           base_epochs=30, finetune_epochs=20, distill=False, finetune_lr=0.05, base_seed=0)
    assert key_of(args, "fpgm", "macs=0.7", 0) == "torchvision_resnet18-ucmerced64-fpgm-macs0.7-s0-b30-f20-lr0.05-bs0"
    args.finetune_lr, args.base_seed, args.scope = 0.01, None, "global"
    assert key_of(args, "l1", "macs=3x", 2) == "torchvision_resnet18-ucmerced64-l1-macs3x-s2-b30-f20-global"
