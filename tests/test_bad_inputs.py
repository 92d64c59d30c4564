"""Bad input, tried as a careless or hostile user would (issue 33): each case is one line on stderr and exit code 2
through the CLI, refused before the work and before the memory it would cost, or (where the input is valid) works."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import pytest
import torch
import zstandard as zstd
from PIL import Image

import prunekit
from prunekit.cli.main import MAX_MESSAGE, main
from prunekit.data import load_dataset
from prunekit.storage import codec
from prunekit.storage.checkpoint import read_description

from .conftest import REPO, make_image_folder, ucmerced_root


def run(argv: List[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[:2000]
    assert len(lines[0]) <= MAX_MESSAGE + 40, len(lines[0])  # "prunekit <command>: error: " + the message
    return lines[0]


# -- 1. one class ------------------------------------------------------------------------------------------------
def test_a_folder_with_one_class_is_refused(tmp_path, capsys):
    root = make_image_folder(tmp_path / "only_forest", classes=1)
    code, err = run(["train", "--data", root, "--epochs", 0, "--out", tmp_path / "run"], capsys)
    line = one_line(err)
    assert code == 2 and str(root) in line and "one class folder (class0)" in line and "two classes" in line
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- 2. UC Merced zip layout -------------------------------------------------------------------------------------
def _ucmerced_zip_layout(top: Path) -> Path:
    """UCMerced_LandUse/Images/<class>/: five real images of three classes when the data is here, else generated."""
    images = top / "UCMerced_LandUse" / "Images"
    real = ucmerced_root()
    if real is None:
        make_image_folder(images, classes=3, per_class=5)
    else:
        for cls in ("beach", "forest", "river"):
            (images / cls).mkdir(parents=True)
            for i in range(5):
                shutil.copy(real / cls / f"{cls}{i:02d}.jpg", images / cls)
    return images


@pytest.mark.parametrize("given", ["top", "UCMerced_LandUse"])
def test_the_ucmerced_zip_layout_is_read_from_its_class_level(tmp_path, capsys, caplog, given):
    images = _ucmerced_zip_layout(tmp_path / "top")
    data = tmp_path / "top" if given == "top" else images.parent
    code, err = run(["train", "--data", data, "--epochs", 0, "--image-size", 16, "--out", tmp_path / "run",
                     "--no-progress"], capsys)
    assert code == 0, err
    recorded = read_description(tmp_path / "run" / "model.safetensors")["data"]
    assert recorded["classes"] == sorted(p.name for p in images.iterdir()) and len(recorded["classes"]) == 3
    assert recorded["source"] == str(images.resolve())  # later commands read the class level directly
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(data.resolve()) in m and f"{images.resolve()}; using that folder" in m for m in said), said
    # on the terminal the warning is one line with the command's prefix (was Python's bare last-resort output)
    assert [line for line in err.splitlines() if "using that folder" in line][0].startswith(
        "prunekit train: warning: data folder")


# -- 3. broken symlink -------------------------------------------------------------------------------------------
@pytest.fixture
def with_broken_link(tmp_path) -> Path:
    root = make_image_folder(tmp_path / "scenes", classes=2)
    (root / "class1" / "gone.png").symlink_to(tmp_path / "not" / "there.png")
    return root


def test_a_broken_symlink_is_skipped_with_a_count_by_default(with_broken_link, caplog):
    ds = load_dataset(with_broken_link, image_size=16)
    assert len(ds.labels) == 20 and ds.skipped == [str(with_broken_link.resolve() / "class1" / "gone.png")]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "skipped 1 unreadable image" in said[0] and "gone.png (broken symlink to" in said[0]
    assert "on_bad_image='fail'" in said[0]  # the message says how to refuse instead


def test_a_broken_symlink_is_one_line_with_on_bad_image_fail(with_broken_link, tmp_path, capsys):
    code, err = run(["train", "--data", with_broken_link, "--on-bad-image", "fail", "--epochs", 0,
                     "--out", tmp_path / "run"], capsys)
    line = one_line(err)
    assert code == 2 and "gone.png (broken symlink to" in line and "1 unreadable image" in line


# -- 5. YAML billion laughs, long values -------------------------------------------------------------------------
def _laughs(path: Path, levels: int) -> Path:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    path.write_text("\n".join(lines + [f"seed: *l{levels - 1}"]) + "\n")
    return path


def test_a_billion_laughs_recipe_is_refused_before_it_expands(tmp_path, capsys):
    # 6 levels (9**6 strings, a 4 MB error line before the fix) keeps the test safe if the refusal breaks; the
    # 9-level file that exhausted memory is refused by the same check on the event stream
    for levels in (6, 9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code, err = run(["train", "--config", _laughs(tmp_path / f"laughs{levels}.yaml", levels)], capsys)
        line = one_line(err)
        assert code == 2 and "alias *l0 at line 2" in line
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 64  # MiB


def test_a_long_recipe_value_is_cut_in_the_error_line(tmp_path, capsys):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(f"seed: '{'x' * 5000}'\n")
    code, err = run(["train", "--config", recipe], capsys)
    line = one_line(err)
    assert code == 2 and line.startswith("prunekit train: error: --seed") and line.endswith("characters)")


def test_a_deeply_nested_recipe_is_refused(tmp_path, capsys):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("seed: " + "[" * 1000 + "\n")  # PyYAML slows sharply with depth (100k: minutes)
    code, err = run(["train", "--config", recipe], capsys)
    assert code == 2 and "nests values 9 deep" in one_line(err)


# -- 6. binary --config ------------------------------------------------------------------------------------------
def test_a_jpeg_passed_as_config_is_one_line(tmp_path, capsys):
    real = ucmerced_root()
    jpeg = real / "forest" / "forest00.jpg" if real else tmp_path / "photo.jpg"
    if not real:
        Image.new("RGB", (32, 32), (30, 120, 40)).save(jpeg)
    code, err = run(["prune", "--config", jpeg], capsys)
    line = one_line(err)
    assert code == 2 and str(jpeg) in line and "not a text file" in line and "YAML recipe" in line


# -- 7. compressed checkpoint declaring a huge all-zero tensor ---------------------------------------------------
def _pack(raw: bytes) -> bytes:
    comp = zstd.ZstdCompressor().compress(raw)
    outer = codec._OUTER.pack(1, len(raw), len(comp), zlib.crc32(raw))
    return codec.MAGIC + outer + struct.pack("<I", zlib.crc32(outer)) + comp


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = prunekit.create_model("resnet_tiny", 3, widths=[8, 16], blocks=[1, 1])
    return prunekit.save(model, tmp_path_factory.mktemp("pks") / "good.pks", codec={"values": "fp32"})


def _declaring(good: Path, shape: List[int], dest: Path) -> Path:
    """``good`` with its first sparse tensor declared as ``shape`` and all zero: a few bytes of header."""
    raw = codec._raw_stream(good.read_bytes())
    n = struct.unpack_from("<I", raw)[0]
    header, body = json.loads(raw[4:4 + n]), raw[4 + n:]
    entry = next(e for e in header["tensors"] if e["layout"] == "sparse")
    k = len(header["sections"])
    header["sections"] += [[len(body), 0]] * 3
    entry.update(shape=shape, nnz=0, positions="kept_gaps", pos_sections=[k, k + 1], val_sections=[k + 2], meta={})
    head = json.dumps(header).encode()
    dest.write_bytes(_pack(struct.pack("<I", len(head)) + head + body))
    return dest


@contextmanager
def address_space_headroom(gib: float) -> Iterator[None]:
    """Allocations beyond ``gib`` more than this process maps now fail (MemoryError) instead of being made, so a
    check that comes after the allocation fails the test rather than taking the machine's memory."""
    mapped = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmSize:")) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + int(gib * 2**30), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
@pytest.mark.parametrize("command", ["info", "size"])
@pytest.mark.parametrize("shape, size", [([65536, 16384], "4.0 GiB"), ([1 << 20, 1 << 20], "4,096.0 GiB")])
def test_a_header_declaring_a_huge_zero_tensor_is_refused_before_allocating(compressed, tmp_path, capsys, command,
                                                                           shape, size):
    bad = _declaring(compressed, shape, tmp_path / "bad.pks")
    with address_space_headroom(1.0):  # 4 GiB would have been allocated (5.9 GB peak) before the refusal
        code, err = run([command, bad], capsys)
    line = one_line(err)
    assert code == 2 and str(bad) in line and f"declares {size} of tensors" in line and "stem.0.weight" in line


def test_declared_shapes_are_checked_against_the_model_before_decoding(compressed, tmp_path, capsys):
    bad = _declaring(compressed, [8192, 4096], tmp_path / "bad.pks")  # 128 MiB: under the size bound
    with address_space_headroom(0.1):  # decoding first (then comparing) would need 160 MiB
        code, err = run(["info", bad], capsys)
    line = one_line(err)
    assert code == 2 and "stem.0.weight is (8192, 4096) in the file but (8, 3, 3, 3) in the described model" in line


def test_a_raw_stream_far_larger_than_its_compressed_form_is_refused(tmp_path):
    path = tmp_path / "bomb.pks"
    raw_len, chunk = 96 << 20, bytes(1 << 20)  # zeros: ~4 KB compressed, written without holding 96 MiB
    crc, comp = 0, zstd.ZstdCompressor().compressobj(size=raw_len)
    parts = []
    for _ in range(raw_len // len(chunk)):
        crc = zlib.crc32(chunk, crc)
        parts.append(comp.compress(chunk))
    body = b"".join(parts) + comp.flush()
    outer = codec._OUTER.pack(1, raw_len, len(body), crc)
    path.write_bytes(codec.MAGIC + outer + struct.pack("<I", zlib.crc32(outer)) + body)
    with pytest.raises(prunekit.errors.CheckpointError, match=r"100,663,296-byte stream in .* more than 1000x"):
        codec.read_compressed(path)


# -- 8. read-only output folders ---------------------------------------------------------------------------------
def _cli_in_locked(args: List[str], locked: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the CLI with ``locked`` (an empty folder) read-only and as its working folder. Root writes through any
    permission bits, so for root ``locked`` becomes a private read-only tmpfs (a user and mount namespace that ends
    with the command); anyone else gets it with mode 0555."""
    command = [sys.executable, "-m", "prunekit.cli.main", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
            pytest.skip("running as root without user namespaces: no folder is read-only to root")
        command = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && cd "$0" && exec "$@"', str(locked),
                   *command]
    else:
        locked.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRUNEKIT_CACHE": str(tmp_path / "cache")}
    try:
        return subprocess.run(command, env=env, cwd=locked, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)


@pytest.fixture
def saved_and_locked(tmp_path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    ckpt = prunekit.save(prunekit.create_model("vgg_tiny", 3).eval(), tmp_path / "m.safetensors")
    locked = tmp_path / "locked"
    locked.mkdir()
    return ckpt, locked


def _refused_as_unwritable(done: subprocess.CompletedProcess, command: str, flag: str, locked: Path) -> None:
    line = one_line(done.stderr)
    assert done.returncode == 2 and line.startswith(f"prunekit {command}: error: {flag}"), line
    assert re.search(f"folder {locked} (is on a read-only file system|is not writable by this user); give a "
                     "folder you can write to", line), line


def test_export_into_a_read_only_folder_is_one_line(saved_and_locked, tmp_path):
    ckpt, locked = saved_and_locked
    done = _cli_in_locked(["export", ckpt, "--onnx", locked / "m.onnx"], locked, tmp_path)
    _refused_as_unwritable(done, "export", "--onnx", locked)


@pytest.mark.slow  # six CLI processes
def test_every_output_flag_into_a_read_only_folder_is_one_line(saved_and_locked, tmp_path):
    ckpt, locked = saved_and_locked
    data = make_image_folder(tmp_path / "scenes", classes=2, per_class=5)
    for args, flag in [(["export", ckpt, "--onnx", locked / "new" / "m.onnx"], "--onnx"),
                       (["export", ckpt], "--onnx model.onnx"),  # the default, in the read-only working folder
                       (["train", "--data", data, "--out", locked / "run"], "--out"),
                       (["prune", "--model", ckpt, "--out", locked / "run"], "--out")]:
        _refused_as_unwritable(_cli_in_locked(args, locked, tmp_path), args[0], flag, locked)
    # no --out: the job's default folder (runs/) in the read-only working folder, met while working
    done = _cli_in_locked(["train", "--data", data, "--epochs", 0, "--image-size", 16], locked, tmp_path)
    line = one_line(done.stderr)
    assert done.returncode == 2 and re.match("prunekit train: error: (Read-only file system|Permission denied): "
                                             "runs; give a folder you can write to", line), line
