"""What a model is fed while measured and exported (prunekit.measure.state.InputSpec): image shapes keep their old
meaning, token ids stay ints, and every count and export uses the input it is given."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import ConfigError
from prunekit.export import export_onnx
from prunekit.measure import InputSpec, count_macs, measure_model
from prunekit.measure.state import input_spec, parse_input_size


class Tokens(nn.Module):
    """Token ids -> embedding -> MLP: MACs per token are 16*32 + 32*4, the embedding lookup costs none."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.emb(ids))))


def ids(seq: int, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, seq, dtype=torch.long)


def test_spec_from_examples_round_trips_and_makes_valid_inputs():
    spec = InputSpec.from_example((torch.randn(2, 3, 8, 8), ids(5, 2)))
    assert spec.shapes == ((3, 8, 8), (5,)) and spec.dtypes == ("float32", "int64")
    assert InputSpec.from_dict(spec.to_dict()) == spec and spec.label() == "3x8x8, 5 int64"
    x, t = spec.make(4, "cpu", torch.float16)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float16 and t.shape == (4, 5) and t.dtype == torch.int64
    assert int(t.abs().sum()) == 0  # token id 0 exists in every vocabulary
    assert input_spec((3, 16, 16)) == InputSpec(((3, 16, 16),), ("float32",))  # the old image shape
    with pytest.raises(ConfigError, match="example input 1 is list"):
        InputSpec.from_example((torch.zeros(1, 2), [1, 2]))
    with pytest.raises(ConfigError, match="'complex64'"):
        InputSpec(((2,),), ("complex64",))


@pytest.mark.parametrize("text, want", [("3x224x224", ((3, 224, 224),)), ("160", ((3, 160, 160),))])
def test_input_size_flag_for_an_image(text, want):
    assert parse_input_size(text, InputSpec.image((3, 64, 64))).shapes == want


def test_input_size_flag_for_tokens_keeps_the_recorded_dtype():
    spec = parse_input_size("128", InputSpec.from_example(ids(8)))
    assert spec.shapes == ((128,),) and spec.dtypes == ("int64",)
    with pytest.raises(ConfigError, match="gives 2 input"):
        parse_input_size("3x8x8,4", InputSpec.from_example(ids(8)))
    with pytest.raises(ConfigError, match="joined by 'x'"):
        parse_input_size("3*224*224")


@pytest.mark.parametrize("size", [8, 12])
def test_conv_macs_are_the_closed_form_at_each_size(size):
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert count_macs(conv, (3, size, size))[0] == 5 * 3 * 9 * size * size
    assert count_macs(conv, InputSpec.image((3, size, size)))[0] == 5 * 3 * 9 * size * size


@pytest.mark.parametrize("seq", [10, 20])
def test_token_model_macs_count_on_int_inputs_also_on_the_meta_device(seq):
    spec = InputSpec.from_example(ids(seq))
    want = seq * (16 * 32 + 32 * 4)
    assert count_macs(Tokens(), spec) == (want, 2 * want)
    with torch.device("meta"):
        twin = Tokens()
    assert count_macs(twin, spec)[0] == want  # shapes only, as the allocators count their trial plans


@pytest.mark.parametrize("seq", [8, 16])
def test_bert_macs_are_the_closed_form_at_each_sequence_length(seq):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50, max_position_embeddings=64)
    bert = transformers.BertModel(config).eval()
    per_token = 4 * 32 * 32 + 2 * 32 * 64  # q, k, v, output projections + the MLP
    attention = 2 * seq * seq * 32  # scores and the weighted sum, over both heads
    pooler = 32 * 32  # the [CLS] token only
    assert count_macs(bert, InputSpec.from_example(ids(seq)))[0] == seq * per_token + attention + pooler


def test_a_macs_target_is_reached_on_the_token_input():
    torch.manual_seed(0)
    model = Tokens()
    spec = InputSpec.from_example(ids(10))
    small = prunekit.prune(model, ids(10), reduce="macs=0.5")  # a float dummy would crash the embedding
    assert count_macs(small, spec)[0] == pytest.approx(0.5 * count_macs(model, spec)[0], rel=0.05)
    m = measure_model(small, spec, latency=False)
    assert m.input_shape == (10,) and m.macs == count_macs(small, spec)[0]


def test_token_model_exports_with_int_input_and_a_dynamic_batch(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Tokens().eval()
    info = export_onnx(model, tmp_path / "t.onnx", InputSpec.from_example(ids(6)))
    assert info["input"] == {"shapes": [[6]], "dtypes": ["int64"]} and info["max_abs_diff"] < 1e-5
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    tokens = torch.randint(0, 50, (4, 6))
    got = session.run(None, {"input": tokens.numpy()})[0]
    assert np.abs(got - model(tokens).detach().numpy()).max() < 1e-5
