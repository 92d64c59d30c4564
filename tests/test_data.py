"""prunekit.data: folder scan errors, decode cache, stratified splits, deterministic DDP loaders, augmentations."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit.data import Augment, apply_augment, default_data_dir, draw_params, load_dataset, make_loader
from prunekit.data import cache as data_cache
from prunekit.data import decode as data_decode
from prunekit.data.splits import split_counts
from prunekit.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def make_folder(root: Path, counts: Dict[str, int], size: int = 12, ext: str = "png", seed: int = 0) -> Path:
    """A tiny ImageFolder tree of random RGB images (PNG by default so pixels survive exactly)."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:03d}.{ext}")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "scenes", {"beach": 10, "forest": 12, "river": 9})


def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = data_decode.decode_files

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(data_decode, "decode_files", counting)
    return calls


# ---------------------------------------------------------------- splits
def test_split_counts_follow_the_protocol() -> None:
    assert split_counts(100, 0.2, 0.1) == {"train": 72, "val": 8, "test": 20}  # UC Merced 80/20, val from train
    assert split_counts(50, 0.2, 0.1) == {"train": 36, "val": 4, "test": 10}
    assert split_counts(100, 0.2, 0.0) == {"train": 80, "val": 0, "test": 20}
    assert split_counts(3, 0.2, 0.1) == {"train": 1, "val": 1, "test": 1}  # each non-empty split gets one


def test_splits_are_stratified_disjoint_and_cover_everything(folder: Path) -> None:
    ds = load_dataset(folder, image_size=8, seed=0, test_frac=0.2, val_frac=0.25)
    parts = [set(ds.splits[s].tolist()) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(ds.labels)))
    per_class = {name: {s: int((ds.labels[ds.splits[s]] == c).sum()) for s in ds.splits}
                 for c, name in enumerate(ds.classes)}
    assert per_class == {"beach": {"train": 6, "val": 2, "test": 2},
                         "forest": {"train": 7, "val": 3, "test": 2},
                         "river": {"train": 5, "val": 2, "test": 2}}


def test_splits_depend_on_seed_only(folder: Path) -> None:
    a = load_dataset(folder, image_size=8, seed=0)
    b = load_dataset(folder, image_size=8, seed=0, cache=False)  # no cache: same split
    c = load_dataset(folder, image_size=8, seed=1)
    for s in a.splits:
        assert torch.equal(a.splits[s], b.splits[s])
    assert not torch.equal(a.splits["test"], c.splits["test"])
    assert torch.equal(a.images, b.images)


def test_val_frac_zero_gives_empty_val(folder: Path) -> None:
    ds = load_dataset(folder, image_size=8, val_frac=0.0)
    assert ds.splits["val"].numel() == 0
    assert ds.splits["train"].numel() + ds.splits["test"].numel() == len(ds.labels)
    assert len(make_loader(ds, "val", batch_size=4)) == 0


@pytest.mark.parametrize("kwargs", [{"test_frac": 0.0}, {"test_frac": 1.0}, {"test_frac": -0.1},
                                    {"val_frac": 1.0}, {"val_frac": -0.5}, {"on_bad_image": "ignore"},
                                    {"image_size": 0}, {"image_size": 32.0}, {"workers": 0}, {"pool": "gpu"}])
def test_bad_options_raise_config_error(folder: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        load_dataset(folder, **kwargs)


def test_too_small_class_is_a_clear_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"big": 10, "tiny": 2})
    with pytest.raises(DataError, match=r"tiny.*2 usable image.*val_frac=0"):
        load_dataset(root, image_size=8, val_frac=0.1)
    ds = load_dataset(root, image_size=8, val_frac=0.0)  # two images are enough for train + test
    assert int((ds.labels[ds.splits["test"]] == 1).sum()) == 1


# ---------------------------------------------------------------- layout errors
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        load_dataset(tmp_path / "nope")


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(tmp_path / "f.jpg")


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} has no class subfolders"):
        load_dataset(tmp_path / "empty")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (4, 4)).save(loose / "a.png")
    with pytest.raises(DataError, match="holds images directly"):
        load_dataset(loose)


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 5})
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"class folder {root.resolve() / 'b'} has no images"):
        load_dataset(root)


def test_extensions_nesting_and_non_square(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for cls, name in [("a", "x.JPG"), ("a", "sub/y.tif"), ("a", "z.bmp"), ("b", "p.jpeg"), ("b", "q.tiff"),
                      ("b", "r.png")]:
        (root / cls / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 13), (200, 10, 10)).save(root / cls / name)
    (root / "a" / "readme.txt").write_text("ignored")
    ds = load_dataset(root, image_size=8, val_frac=0.0, test_frac=0.34)
    assert ds.files == ["a/sub/y.tif", "a/x.JPG", "a/z.bmp", "b/p.jpeg", "b/q.tiff", "b/r.png"]
    assert ds.images.shape == (6, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert int(ds.images[:, 0].float().mean()) in range(190, 211)  # red survived decode + resize


def test_sixteen_bit_image_is_stretched_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint16) * 4000, (16, 1))).save(path)
    out = data_decode.decode_image(str(path), 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 0, -1] == 255 and np.array_equal(out[0], out[2])


# ---------------------------------------------------------------- bad images
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_bad_image_skip_vs_fail(folder: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = folder / "forest" / "broken.jpg"
    if damage == "garbage":
        bad.write_bytes(b"this is not a jpeg")
    else:
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:400])
    with caplog.at_level(logging.WARNING, logger="prunekit.data"):
        ds = load_dataset(folder, image_size=8)
    assert ds.skipped == [str(bad.resolve())] and len(ds.labels) == 31 and ds.describe()["skipped"] == 1
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "1 unreadable" in warnings[0].getMessage() and str(bad.resolve()) in \
        warnings[0].getMessage()
    with pytest.raises(DataError, match=f"first {bad.resolve()}"):  # from the cache this time: still fails
        load_dataset(folder, image_size=8, on_bad_image="fail")
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset(folder, image_size=8, on_bad_image="fail", cache=False)


# ---------------------------------------------------------------- cache
def test_second_load_reads_the_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset(folder, image_size=8)
    assert first.cache_path is not None and first.cache_path.is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(data_decode, "decode_files", refuse)
    second = load_dataset(folder, image_size=8)
    assert torch.equal(first.images, second.images) and first.mean == second.mean
    assert load_dataset(folder, image_size=8, seed=5).cache_path == first.cache_path  # seed is not part of the key
    with pytest.raises(AssertionError):
        load_dataset(folder, image_size=10)  # another size is another cache


def test_cache_rebuilt_when_a_file_changes(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset(folder, image_size=8)
    calls = decode_calls(monkeypatch)
    target = folder / "beach" / "beach_000.png"
    Image.new("RGB", (12, 12), (0, 255, 0)).save(target)
    os.utime(target, ns=(10**18, 10**18))
    second = load_dataset(folder, image_size=8)
    assert calls == [31] and second.cache_path != first.cache_path
    row = second.files.index("beach/beach_000.png")
    assert second.images[row, 1].min() == 255 and not torch.equal(first.images[row], second.images[row])
    (folder / "river" / "river_000.png").unlink()  # removing a file also invalidates
    assert len(load_dataset(folder, image_size=8).labels) == 30 and calls == [31, 30]


def test_corrupt_cache_is_rebuilt(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    first = load_dataset(folder, image_size=8)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:100])
    calls = decode_calls(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="prunekit.data"):
        again = load_dataset(folder, image_size=8)
    assert calls == [31] and torch.equal(first.images, again.images)
    assert any("stale or corrupt" in r.getMessage() for r in caplog.records)
    assert load_dataset(folder, image_size=8).cache_path.stat().st_size > 1000 and calls == [31]


def test_unwritable_cache_dir_still_loads(folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    ds = load_dataset(folder, image_size=8, cache_dir=blocker)
    assert ds.cache_path is None and len(ds.labels) == 31


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_parallel_decode_matches_serial(folder: Path, monkeypatch: pytest.MonkeyPatch, pool: str) -> None:
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    serial, ok1, _ = data_decode.decode_files(paths, 8, workers=1)
    monkeypatch.setattr(data_decode, "POOL_THRESHOLD", 1)
    monkeypatch.setattr(data_decode, "_CHUNK", 4)
    parallel, ok2, _ = data_decode.decode_files(paths, 8, workers=2, pool=pool)
    assert np.array_equal(serial, parallel) and np.array_equal(ok1, ok2)


# ---------------------------------------------------------------- dataset object
def test_mean_std_are_train_split_stats(folder: Path) -> None:
    ds = load_dataset(folder, image_size=8)
    train = ds.images[ds.splits["train"]].double() / 255
    assert np.allclose(ds.mean, train.mean(dim=(0, 2, 3)).tolist(), atol=1e-9)
    assert np.allclose(ds.std, train.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-9)
    info = json.loads(json.dumps(ds.describe()))
    assert info["num_classes"] == 3 and info["splits"] == {"train": 22, "val": 3, "test": 6}
    assert info["image_size"] == 8 and info["skipped"] == 0 and len(info["mean"]) == 3


def test_embedded_data_loads() -> None:
    assert default_data_dir().is_dir()
    ds = load_dataset(image_size=32)
    assert len(ds.classes) == 21 and ds.images.shape == (1050, 3, 32, 32)
    assert torch.bincount(ds.labels).tolist() == [50] * 21
    assert {k: v.numel() for k, v in ds.splits.items()} == {"train": 756, "val": 84, "test": 210}


# ---------------------------------------------------------------- loaders
def batches(loader) -> tuple:
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture
def small_ds(tmp_path: Path):
    return load_dataset(make_folder(tmp_path / "l", {"a": 14, "b": 14, "c": 14}, size=8), image_size=8,
                        val_frac=0.0)


def test_loader_batches_are_normalized_and_shaped(small_ds) -> None:
    loader = make_loader(small_ds, "test", batch_size=4, train=False)
    x, y = batches(loader)
    want = (small_ds.images[small_ds.splits["test"]].float() / 255 - torch.tensor(small_ds.mean).view(1, 3, 1, 1)) \
        / torch.tensor(small_ds.std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(loader) == 3  # 9 samples, batches 4+4+1
    assert torch.allclose(x, want, atol=1e-6) and torch.equal(y, small_ds.labels[small_ds.splits["test"]])


def test_loader_is_deterministic_per_seed_and_epoch(small_ds) -> None:
    a = batches(make_loader(small_ds, "train", batch_size=5, seed=3, epoch=2))
    b = batches(make_loader(small_ds, "train", batch_size=5, seed=3, epoch=2))
    c = batches(make_loader(small_ds, "train", batch_size=5, seed=3, epoch=3))
    d = batches(make_loader(small_ds, "train", batch_size=5, seed=4, epoch=2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    resumed = make_loader(small_ds, "train", batch_size=5, seed=3, epoch=0)
    for epoch in range(3):  # a loader advanced epoch by epoch equals a fresh one built at that epoch
        resumed.set_epoch(epoch)
        list(resumed)
    resumed.set_epoch(2)
    assert torch.equal(batches(resumed)[0], a[0])


def test_train_loader_shards_equally_across_ranks(small_ds) -> None:
    n = small_ds.splits["train"].numel()  # 33: one sample dropped for 2 ranks
    whole_x, whole_y = batches(make_loader(small_ds, "train", batch_size=4, seed=1, epoch=5))
    shards = [make_loader(small_ds, "train", batch_size=4, seed=1, epoch=5, rank=r, world_size=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4 and shards[0].num_samples == n // 2
    for r, shard in enumerate(shards):
        x, y = batches(shard)
        assert torch.equal(x, whole_x[r::2][: n // 2]) and torch.equal(y, whole_y[r::2][: n // 2])
    rows = [shard._plan()[0] for shard in shards]
    assert not set(rows[0].tolist()) & set(rows[1].tolist())
    assert len(set(rows[0].tolist()) | set(rows[1].tolist())) == n - n % 2


def test_eval_loader_shards_cover_each_sample_once(small_ds) -> None:
    full = small_ds.splits["train"]
    parts = [make_loader(small_ds, "train", batch_size=4, train=False, rank=r, world_size=3)._plan()[0]
             for r in range(3)]
    assert torch.equal(torch.cat(parts), full)  # contiguous blocks in rank order, no padding
    assert [p.numel() for p in parts] == [11, 11, 11]
    ys = [batches(make_loader(small_ds, "test", batch_size=2, train=False, rank=r, world_size=2))[1]
          for r in range(2)]
    assert torch.equal(torch.cat(ys), small_ds.labels[small_ds.splits["test"]])


def test_train_loader_drop_rules(small_ds) -> None:
    assert len(make_loader(small_ds, "train", batch_size=8)) == 4  # 33 = 4*8 + 1: the lone sample is dropped
    assert len(make_loader(small_ds, "train", batch_size=8, drop_last=False)) == 5 and \
        sum(len(y) for _, y in make_loader(small_ds, "train", batch_size=8, drop_last=False)) == 33
    assert len(make_loader(small_ds, "train", batch_size=10)) == 4
    assert len(make_loader(small_ds, "train", batch_size=10, drop_last=True)) == 3


def test_calibration_batches_take_classes_in_turn(small_ds) -> None:
    """The training split is stored class by class; calibration batches must not be its first few classes."""
    from prunekit.data import calibration_batches

    got = calibration_batches(small_ds, batches=2, batch_size=3)
    ys = torch.cat([y for _, y in got])
    assert [len(y) for _, y in got] == [3, 3] and sorted(ys[:3].tolist()) == [0, 1, 2]
    assert torch.bincount(ys, minlength=3).tolist() == [2, 2, 2]
    x_all, y_all = batches(make_loader(small_ds, "train", batch_size=64, train=False))  # un-augmented, normalized
    rows = {int(r): i for i, r in enumerate(small_ds.splits["train"])}
    from prunekit.data.loader import calibration_order

    picked = [rows[int(r)] for r in calibration_order(small_ds)[:6]]
    assert torch.equal(torch.cat([x for x, _ in got]), x_all[picked]) and torch.equal(ys, y_all[picked])
    assert torch.equal(calibration_batches(small_ds, 2, 3)[1][0], got[1][0])  # fixed order
    everything = calibration_order(small_ds)
    assert sorted(everything.tolist()) == small_ds.splits["train"].tolist()  # a permutation of the split


def test_loader_bad_arguments(small_ds) -> None:
    with pytest.raises(ConfigError, match="'valid'"):
        make_loader(small_ds, "valid")
    with pytest.raises(ConfigError, match="rank=2"):
        make_loader(small_ds, "train", rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch_size=0"):
        make_loader(small_ds, "train", batch_size=0)
    with pytest.raises(ConfigError, match="crop='zoom'"):
        Augment(crop="zoom")


# ---------------------------------------------------------------- augmentation
def test_flips_and_rotations_permute_pixels() -> None:
    x = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    params = draw_params(Augment(), 16, torch.Generator().manual_seed(0))
    out = apply_augment(x, params, Augment(crop="none"))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out.flatten(1).sort(dim=1)[0], x.flatten(1).sort(dim=1)[0])
    assert not torch.equal(out, x)
    for i in range(16):  # each image is one of the 8 symmetries of the square, the one its draws say
        y = x[i].flip(2) if params["hflip"][i] else x[i]
        y = y.flip(1) if params["vflip"][i] else y
        assert torch.equal(out[i], torch.rot90(y, int(params["rot90"][i]), dims=(1, 2)))


def test_crops_keep_shape_and_dtype() -> None:
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    params = draw_params(Augment(), 8, torch.Generator().manual_seed(1))
    only_pad = Augment(hflip=False, vflip=False, rot90=False, crop="pad", pad_frac=0.25)
    padded = apply_augment(x, params, only_pad)
    assert padded.shape == x.shape and padded.dtype == torch.uint8
    assert set(padded.unique().tolist()) <= set(x.unique().tolist())  # integer shift: no new pixel values
    zero_shift = {**params, "crop": torch.full((8, 4), 0.5)}  # u = 0.5 is the centre shift: identity
    assert torch.equal(apply_augment(x, zero_shift, only_pad), x)
    resized = apply_augment(x.float(), params, Augment(crop="resized"))
    assert resized.shape == x.shape and resized.dtype == torch.float32
    whole = {**params, "crop": torch.tensor([[0.3, 0.7, 1.0, 0.5]] * 8)}  # area 1, ratio 1: the whole image
    assert torch.allclose(apply_augment(x.float(), whole, Augment(hflip=False, vflip=False, rot90=False,
                                                                  crop="resized")), x.float(), atol=1e-3)
    with pytest.raises(ConfigError, match="float"):
        apply_augment(x, params, Augment(crop="resized"))


def test_augment_off_in_train_loader_gives_plain_images(small_ds) -> None:
    x, y = batches(make_loader(small_ds, "train", batch_size=64, augment=False, seed=2))
    rows = make_loader(small_ds, "train", batch_size=64, seed=2)._plan()[0]
    plain = (small_ds.images[rows].float() / 255 - torch.tensor(small_ds.mean).view(1, 3, 1, 1)) \
        / torch.tensor(small_ds.std).view(1, 3, 1, 1)
    assert torch.allclose(x, plain, atol=1e-6) and torch.equal(y, small_ds.labels[rows])
    aug_x, _ = batches(make_loader(small_ds, "train", batch_size=64, augment=Augment(crop="resized"), seed=2))
    assert aug_x.shape == x.shape and not torch.allclose(aug_x, x)


# ---------------------------------------------------------------- real data
def _ucmerced() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("PRUNEKIT_UCMERCED"), "/work/shared/data/ucmerced", here.parent / "shared/data/ucmerced"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.mark.ucmerced
@pytest.mark.skipif(_ucmerced() is None, reason="UC Merced not found (set PRUNEKIT_UCMERCED)")
def test_ucmerced_full_at_32px() -> None:
    ds = load_dataset(_ucmerced(), image_size=32, val_frac=0.0)
    assert len(ds.classes) == 21 and ds.images.shape == (2100, 3, 32, 32) and not ds.skipped
    for c in range(21):
        assert int((ds.labels[ds.splits["train"]] == c).sum()) == 80
        assert int((ds.labels[ds.splits["test"]] == c).sum()) == 20
