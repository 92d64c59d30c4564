"""Compressed sparse checkpoint: bit-exact lossless round trip, stated error for lossy formats, clean errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.errors import CheckpointError, ConfigError
from prunekit.sparse import magnitude_prune, positions
from prunekit.sparse import quantize as q
from prunekit.storage.codec import (
    decode_positions,
    encode_positions,
    entropy_bound_bytes,
    is_compressed,
    read_compressed,
    write_compressed,
)
from prunekit.storage.size import size_report


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3),
                         nn.BatchNorm2d(32), nn.Flatten(), nn.Linear(32, 40), nn.Linear(40, 7))


def pruned_state(ratio: float = 0.8) -> dict:
    model = small_model()
    magnitude_prune(model, ratio, skip_first=False, skip_last=False)
    model(torch.randn(2, 3, 5, 5))  # BN running stats and num_batches_tracked move
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    return torch.equal(a, b)


# -- lossless ----------------------------------------------------------------------------------------------------
def test_lossless_round_trip_is_bit_exact_for_every_dtype(tmp_path):
    tensors = pruned_state()
    tensors.update({
        "extra.half": torch.randn(8, 4).half(), "extra.bf16": torch.randn(3, 5).bfloat16(),
        "extra.f64": torch.randn(6, 6, dtype=torch.float64), "extra.neg_zero": torch.tensor([[0.0, -0.0, 1.0]]),
        "extra.nan": torch.tensor([[float("nan"), 0.0], [float("inf"), -1.5]]),
        "extra.mask": torch.rand(4, 4) > 0.5, "extra.i32": torch.arange(5, dtype=torch.int32),
        "extra.u8": torch.arange(7, dtype=torch.uint8), "extra.empty": torch.zeros(0, 3),
        "extra.scalar": torch.tensor(3.5), "extra.all_zero": torch.zeros(4, 9), "@train/state": torch.randn(3, 3),
    })
    assert tensors["1.num_batches_tracked"].dtype == torch.int64
    desc = {"arch": {"name": "seq"}, "classes": ["a", "b"]}
    write_compressed(tmp_path / "m.pks", tensors, desc)
    assert is_compressed(tmp_path / "m.pks")
    back, back_desc = read_compressed(tmp_path / "m.pks")
    assert back_desc == desc
    assert list(back) == list(tensors)
    for name, t in tensors.items():
        assert bits_equal(back[name], t), name


def test_saved_masks_cost_nothing_when_they_match_the_zeros(tmp_path):
    tensors = pruned_state(0.9)
    base = write_compressed(tmp_path / "a.pks", tensors, {}, values="int8", level=3)["bytes"]
    masks = {f"@mask/{k}": v != 0 for k, v in tensors.items() if v.ndim >= 2}
    matching = write_compressed(tmp_path / "m.pks", {**masks, **tensors}, {}, values="int8", level=3)["bytes"]
    assert matching - base <= 20 * len(masks)  # each costs its name and a reference (stored bits: 105 bytes)
    odd = masks["@mask/6.weight"].clone()
    odd[0, 0] = ~odd[0, 0]  # no longer the zero pattern: stored as bits
    masks["@mask/6.weight"] = odd
    with_masks = write_compressed(tmp_path / "b.pks", {**masks, **tensors}, {}, values="int8", level=3)
    back, _ = read_compressed(tmp_path / "b.pks")
    for k, m in masks.items():
        assert back[k].dtype == torch.bool and torch.equal(back[k], m), k
    assert list(back) == list({**masks, **tensors})
    only_odd = write_compressed(tmp_path / "c.pks", {"@mask/6.weight": odd, **tensors}, {}, values="int8", level=3)
    assert with_masks["bytes"] - only_odd["bytes"] < 60  # the matching masks are free


def test_compressed_is_smaller_than_dense_and_near_bound(tmp_path):
    tensors = pruned_state(0.9)
    stats = write_compressed(tmp_path / "m.pks", tensors, {})
    bound, nnz, numel = entropy_bound_bytes(tensors)
    assert nnz == sum(int((t != 0).sum()) for k, t in tensors.items() if t.ndim >= 2)
    assert stats["bytes"] < stats["dense_bytes"] / 3
    assert stats["bytes"] < bound * 1.25 + 600  # tiny tensors: header overhead dominates
    report = size_report(tmp_path / "m.pks")
    assert report.compressed_bytes == (tmp_path / "m.pks").stat().st_size and report.bound_bytes == bound
    assert "bound" in str(report)


def test_plain_files_are_not_compressed(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert not is_compressed(tmp_path / "x.safetensors") and not is_compressed(tmp_path / "missing")


@pytest.mark.parametrize("density", [0.0, 0.003, 0.1, 0.5, 0.97, 1.0])
def test_position_codings_round_trip(density):
    torch.manual_seed(0)
    mask = torch.rand(5000) < density
    mask[1000:1400] = False  # a long run of zeros forces a gap escape
    kind, sections = encode_positions(mask)
    back = decode_positions(kind, [memoryview(s) for s in sections], mask.numel(), int(mask.sum()))
    assert torch.equal(back, mask)
    for coding in ("gaps", "rice"):  # every coding round-trips, not just the chosen one
        which = "kept" if density <= 0.5 else "pruned"
        ones = mask if which == "kept" else ~mask
        encode = positions._encode_bytes if coding == "gaps" else positions._encode_rice
        secs = encode(np.flatnonzero(ones.numpy()))
        back = decode_positions(f"{which}_{coding}", secs, mask.numel(), int(mask.sum()))
        assert torch.equal(back, mask), coding
    if 0.0 < density <= 0.1:
        assert kind == "kept_rice"  # independent positions: geometric gaps, Rice is near the entropy


# -- lossy -------------------------------------------------------------------------------------------------------
def _lossy(tmp_path, values):
    tensors = pruned_state(0.7)
    stats = write_compressed(tmp_path / f"{values}.pks", tensors, {}, values=values)
    back, _ = read_compressed(tmp_path / f"{values}.pks")
    return tensors, back, stats


@pytest.mark.parametrize("values,rel", [("fp16", 2.0**-11), ("bf16", 2.0**-8)])
def test_half_formats_within_rounding(tmp_path, values, rel):
    tensors, back, _ = _lossy(tmp_path, values)
    for name, t in tensors.items():
        if t.is_floating_point() and t.ndim >= 2:
            assert ((back[name] - t).abs() <= rel * t.abs()).all(), name
            assert torch.equal(back[name] == 0, t == 0)  # positions are exact
        else:
            assert bits_equal(back[name], t), name  # non-weights stay lossless


def test_int8_per_channel_error_bound(tmp_path):
    tensors, back, _ = _lossy(tmp_path, "int8")
    for name, t in tensors.items():
        if t.ndim >= 2:
            rows = t.reshape(t.shape[0], -1)
            half_step = rows.abs().amax(1, keepdim=True) / 127 / 2
            err = (back[name].reshape_as(rows) - rows).abs()
            assert (err <= half_step * (1 + 1e-5) + 1e-12).all(), name


@pytest.mark.parametrize("bits", [2, 4, 5])
def test_kmeans_values_are_nearest_centroids(tmp_path, bits):
    tensors, back, stats = _lossy(tmp_path, f"kmeans{bits}")
    for name, t in tensors.items():
        if t.ndim >= 2:
            kept = t != 0
            centroids = torch.unique(back[name][kept])
            assert centroids.numel() <= 2**bits
            nearest = centroids[(t[kept][:, None] - centroids[None]).abs().argmin(1)]
            assert torch.allclose(back[name][kept], nearest, atol=1e-6), name


def test_lossy_formats_shrink_in_order(tmp_path):
    tensors = pruned_state(0.5)
    sizes = {v: write_compressed(tmp_path / f"{v}.pks", tensors, {}, values=v)["bytes"]
             for v in ("fp32", "fp16", "int8", "kmeans4")}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["kmeans4"]


def test_pack_bits_round_trip():
    for bits in range(1, 9):
        idx = np.random.default_rng(bits).integers(0, 2**bits, size=1001).astype(np.uint8)
        assert np.array_equal(q.unpack_bits(q.pack_bits(idx, bits), bits, idx.size), idx)


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="kmeans9"):
        write_compressed(tmp_path / "m.pks", pruned_state(), {}, values="kmeans9")
    with pytest.raises(ConfigError, match="int4"):
        write_compressed(tmp_path / "m.pks", pruned_state(), {}, values="int4")
    with pytest.raises(ConfigError, match="JSON"):
        write_compressed(tmp_path / "m.pks", pruned_state(), {"x": object()})
    with pytest.raises(ConfigError, match="NaN"):
        write_compressed(tmp_path / "m.pks", {"w": torch.tensor([[float("nan"), 1.0]])}, {}, values="int8")


# -- damage ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "good.pks"
    write_compressed(path, pruned_state(0.8), {"arch": {"name": "seq"}}, values="kmeans3", level=3)
    return path.read_bytes()


def _read_bytes(tmp_path, data: bytes):
    path = tmp_path / "damaged.pks"
    path.write_bytes(data)
    return read_compressed(path)


def test_truncated_file_is_a_checkpoint_error(tmp_path, good_file):
    for cut in (0, 5, 8, 20, 40, len(good_file) // 2, len(good_file) - 1):
        with pytest.raises(CheckpointError, match="damaged.pks"):
            _read_bytes(tmp_path, good_file[:cut])


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pks"):
        read_compressed(tmp_path / "nope.pks")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damage_only_raises_checkpoint_error(tmp_path, good_file, data):
    buf = bytearray(good_file)
    action = data.draw(st.sampled_from(["flip", "truncate", "splice", "append"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif action == "splice":
        pos = data.draw(st.integers(0, len(buf) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        buf[pos:pos + len(chunk)] = chunk
    else:
        buf += data.draw(st.binary(min_size=1, max_size=8))
    if bytes(buf) == good_file:
        return
    try:
        tensors, desc = _read_bytes(tmp_path, bytes(buf))
    except CheckpointError:
        return
    # a flip in bytes the zstd frame does not use (its padding) leaves every checksum true: then the file must read
    # back exactly what was written, never a silently different result
    good_tensors, good_desc = _read_bytes(tmp_path, good_file)
    assert desc == good_desc and tensors.keys() == good_tensors.keys()
    assert all(torch.equal(tensors[k], good_tensors[k]) for k in tensors)


def test_crafted_header_with_valid_checksums_is_still_rejected(tmp_path):
    """Bypass the checksums: the parser itself must reject nonsense, not crash."""
    import json
    import struct
    import zlib

    import zstandard as zstd

    from prunekit.storage import codec

    def craft(header: dict, body: bytes = b"") -> bytes:
        hb = json.dumps(header).encode()
        raw = struct.pack("<I", len(hb)) + hb + body
        comp = zstd.ZstdCompressor().compress(raw)
        outer = codec._OUTER.pack(1, len(raw), len(comp), zlib.crc32(raw))
        return codec.MAGIC + outer + struct.pack("<I", zlib.crc32(outer)) + comp

    base = {"format": "prunekit-sparse", "version": 1, "values": "fp32", "sections": [[0, 4]], "description": {}}
    bad_entries = [
        {"name": "w", "dtype": "complex64", "shape": [1], "layout": "plain", "sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [2], "layout": "plain", "sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [1], "layout": "plain", "sections": [7]},
        {"name": "w", "dtype": "float32", "shape": [-1], "layout": "plain", "sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [1, 32], "layout": "sparse", "nnz": 99, "positions": "bitmask",
         "values": "fp32", "meta": {}, "pos_sections": [0], "val_sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [1, 1], "layout": "sparse", "nnz": 1, "positions": "zigzag",
         "values": "fp32", "meta": {}, "pos_sections": [0], "val_sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [1, 1], "layout": "sparse", "nnz": 1, "positions": "bitmask",
         "values": "int3", "meta": {}, "pos_sections": [0], "val_sections": [0]},
        {"name": "w", "dtype": "float32", "shape": [1, 1], "layout": "sparse", "nnz": 1, "positions": "bitmask",
         "values": "fp32", "meta": None, "pos_sections": [0], "val_sections": [0]},
    ]
    for entry in bad_entries:
        with pytest.raises(CheckpointError):
            _read_bytes(tmp_path, craft({**base, "tensors": [entry]}, b"\x01\x00\x00\x00"))
    with pytest.raises(CheckpointError, match="newer"):
        raw = craft({**base, "tensors": []})
        outer = codec._OUTER.pack(9, *codec._OUTER.unpack(raw[8:8 + codec._OUTER.size])[1:])
        _read_bytes(tmp_path, codec.MAGIC + outer + struct.pack("<I", zlib.crc32(outer)) + raw[codec.PREFIX_LEN:])
    with pytest.raises(CheckpointError, match="section table"):
        _read_bytes(tmp_path, craft({**base, "sections": [[0, 99]], "tensors": []}, b"\x01"))


def test_prunekit_load_restores_a_compressed_checkpoint_bit_exact(tmp_path):
    import prunekit

    model = prunekit.create_model("resnet_tiny", num_classes=5).eval()
    magnitude_prune(model, 0.9)
    prunekit.save(model, tmp_path / "m.safetensors", codec={"values": "fp32"})
    assert is_compressed(tmp_path / "m.safetensors")
    back = prunekit.load(tmp_path / "m.safetensors").eval()
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert bits_equal(a, b), name
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), back(x))


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_lossless_within_5_percent_of_bound_for_incompressible_values(tmp_path, sparsity):
    """Worst case for the claim: kept values are random 32-bit patterns (no exponent redundancy to exploit)."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(3):
        bits = torch.randint(-2**31, 2**31 - 1, (256, 300), generator=gen, dtype=torch.int32)
        w = bits.view(torch.float32)
        w = torch.where(torch.isfinite(w) & (w != 0), w, torch.ones_like(w))
        w[torch.rand(w.shape, generator=gen) < sparsity] = 0.0
        tensors[f"layer{i}.weight"] = w
        tensors[f"layer{i}.bias"] = torch.randn(256, generator=gen)
    stats = write_compressed(tmp_path / "m.pks", tensors, {})
    bound, _, _ = entropy_bound_bytes(tensors)
    assert stats["bytes"] <= 1.05 * bound, (stats["bytes"], bound)
    back, _ = read_compressed(tmp_path / "m.pks")
    assert all(bits_equal(back[k], v) for k, v in tensors.items())
