import json
import subprocess
import sys

import pytest

import prunekit
from prunekit.cli.commands import COMMANDS
from prunekit.cli.main import build_parser, main
from prunekit.measure import count_params


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and ("--json" in out)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--data", "/no/such/folder", "--epochs", "1"], "/no/such/folder"),
    (["train", "--model", "no_such_model", "--epochs", "0"], "no_such_model"),
    (["prune", "--ratio", "1.5"], "--ratio"),
    (["prune", "--ratio", "-0.1"], "--ratio"),
    (["eval", "/no/such/ckpt.safetensors"], "does not exist"),
    (["train", "--device", "cuda:7", "--epochs", "0"], "cuda"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_unknown_flag_is_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-such-flag"])
    assert e.value.code == 2


def test_recipe_values_and_flags_merge(tmp_path):
    from prunekit.cli.options import parse_options
    from prunekit.config import TrainOptions

    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlr: 0.01\nmodel: resnet_tiny\nlabel-smoothing: 0.0\n")
    ns = build_parser().parse_args(["train", "--config", str(recipe), "--epochs", "3"])
    opts = parse_options(TrainOptions, ns)
    assert (opts.epochs, opts.lr, opts.model, opts.label_smoothing) == (3, 0.01, "resnet_tiny", 0.0)


@pytest.mark.parametrize("text, needle", [
    ("epochs: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
    ("epoch: 3\n", "unknown option 'epoch'"),
    ("epochs: -1\n", "--epochs"),
])
def test_malformed_recipes(tmp_path, capsys, text, needle):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code, out, err = run(["train", "--config", str(recipe)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prunekit.cli.main", "eval", str(tmp_path / "x.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "does not exist" in done.stderr


def test_train_eval_json_on_tiny_folder(tiny_folder, tmp_path, capsys):
    code, out, err = run(["train", "--data", str(tiny_folder), "--image-size", "16", "--model", "vgg_tiny",
                          "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "t"), "--json",
                          "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads(out)
    test = result["test"]
    assert result["epochs_run"] == 2 and test["samples"] == 6  # 2 test images of each of the 3 classes
    assert test["accuracy"] * 6 == pytest.approx(round(test["accuracy"] * 6))  # a count of right answers over 6
    ckpt = result["checkpoint"]
    code, out, err = run(["eval", ckpt, "--data", str(tiny_folder), "--image-size", "16", "--json"], capsys)
    assert code == 0, err
    ev = json.loads(out)
    assert ev["accuracy"] == pytest.approx(result["test"]["accuracy"])
    # The same checkpoint on a dataset with other classes is refused with one line.
    from tests.conftest import make_image_folder

    other = make_image_folder(tmp_path / "other", classes=4)
    code, out, err = run(["eval", ckpt, "--data", str(other), "--image-size", "16"], capsys)
    assert code == 2 and "classes" in err


def test_size_and_export_commands(tmp_path, capsys):
    import prunekit
    from prunekit.models import create_model
    from prunekit.sparse import magnitude_prune

    model = create_model("vgg_tiny", num_classes=3)
    magnitude_prune(model, ratio=0.9, scope="global").apply(model)
    path = tmp_path / "m.safetensors"
    prunekit.save(model, path, data={"input_size": 16})
    code, out, err = run(["size", str(path), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["compressed_bytes"] < rep["dense_bytes"] / 5 and rep["bound_bytes"] < rep["dense_bytes"] / 5
    code, out, err = run(["export", str(path), "--onnx", str(tmp_path / "m.onnx"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["max_abs_diff"] < 1e-4 and (tmp_path / "m.onnx").is_file()


def test_info_is_a_summary_and_json_the_whole_description(tiny_folder, tmp_path, capsys):
    code, out, err = run(["prune", "--data", str(tiny_folder), "--image-size", "16", "--model", "vgg_tiny",
                          "--epochs", "1", "--finetune-epochs", "0", "--batch-size", "8", "--structured",
                          "--ratio", "0.5", "--val-frac", "0.2", "--no-latency", "--out", str(tmp_path / "p"),
                          "--json", "--no-progress"], capsys)
    assert code == 0, err
    ckpt = json.loads(out)["checkpoint"]
    code, out, err = run(["info", ckpt], capsys)
    assert code == 0, err
    lines = dict(line.split(None, 1) if "  " not in line else [s.strip() for s in line.split("  ", 1)]
                 for line in out.strip().splitlines()[:-1])
    assert lines["model"] == "vgg_tiny, 3 classes, input 3x16x16"
    assert lines["data"].endswith("(split seed 0, test 0.2, val 0.2)")
    assert lines["pruning"].startswith("structured, criterion l1, scope uniform, ratio 0.5, ")
    assert "channels kept in" in lines["pruning"] and len(out.splitlines()) < 20  # not the 700-line JSON
    code, out, err = run(["info", ckpt, "--json"], capsys)
    full = json.loads(out)
    assert full["description"]["pruning"]["plan"]["groups"]
    assert full["measurement"]["params"] == count_params(prunekit.load(ckpt))


def test_prune_help_reads_by_topic(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[0] == "options:" and {"data:", "run: seed, device, output:", "structured channel widths:",
                                          "schedule: prune while training (--schedule other than oneshot):"} \
        <= set(headings)
    first_group = out.index("\n" + headings[1] + "\n")
    assert out.index("  --schedule ") < first_group  # the main choice
    assert headings[1].startswith("start:") and headings[2].startswith("what to remove")  # then by task
    assert out.index("  --start-epoch ") > out.index("schedule: prune while training")
    assert out.index("  --reduce ") > out.index("what to remove") and out.index("  --nm ") > out.index("unstructured /")



def test_export_prints_what_it_verified(tmp_path, capsys):
    import prunekit
    from prunekit.models import create_model

    path = tmp_path / "m.safetensors"
    prunekit.save(create_model("vgg_tiny", num_classes=3), path, data={"input_size": 16})
    code, out, err = run(["export", str(path), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert first.startswith(f"{tmp_path / 'm.onnx'} (") and "ONNX opset 17" in first
    assert second.startswith("verified with onnxruntime: largest output difference from PyTorch ")
    assert float(second.rsplit(" ", 1)[1]) < 1e-4


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`prunekit info CKPT | head -1` where the reader has already gone: exit 0, nothing on stderr."""
    import os

    import prunekit
    from prunekit.models import create_model

    path = tmp_path / "m.safetensors"
    prunekit.save(create_model("vgg_tiny", num_classes=3), path, data={"input_size": 16})
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "prunekit.cli.main", "info", str(path), "--no-latency"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_library_warning_is_one_line_on_stderr(capsys):
    import warnings

    from prunekit.cli.main import _warnings_as_lines
    from prunekit.errors import PruningWarning

    saved = warnings.showwarning
    try:
        _warnings_as_lines("prune")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = warnings.showwarning  # catch_warnings restores; keep ours inside
            _warnings_as_lines("prune")
            warnings.warn("2 group(s) holding 1,024 parameters were left whole", PruningWarning)
    finally:
        warnings.showwarning = saved
    err = capsys.readouterr().err
    assert err == "prunekit prune: warning: 2 group(s) holding 1,024 parameters were left whole\n"
