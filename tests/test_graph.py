"""Dependency graph: the right slices end up coupled (residuals, concat, depthwise, groups, shuffle, heads)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import UnsupportedOpError
from prunekit.graph import build_graph


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, c // 2, 1)
        self.expand = nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class ChannelLN(nn.Module):
    """LayerNorm over channels of an NCHW tensor (ConvNeXt style)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class TinyNet(nn.Module):
    """Every CNN coupling in one small model: residual, depthwise, grouped+GN, concat, SE, split, shuffle, LN,
    PReLU and a Linear after flatten (spatial multiplicity 4)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.res = Residual(16)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.PReLU(16))
        self.grouped = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.GroupNorm(4, 32), nn.ReLU())
        self.a = nn.Conv2d(32, 8, 1)
        self.b = nn.Conv2d(32, 8, 1)
        self.bn_cat = nn.BatchNorm2d(16)
        self.se = SE(16)
        self.right = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(16, 24, 3, padding=1)
        self.norm = ChannelLN(24)
        self.fc = nn.Linear(24 * 4, classes)

    def forward(self, x):
        x = self.res(self.stem(x))
        x = self.grouped(self.dw(x))
        x = F.relu(self.bn_cat(torch.cat([self.a(x), self.b(x)], 1)))
        x = self.se(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.right(right)], 1)
        x = x.view(x.shape[0], 2, -1, *x.shape[2:]).transpose(1, 2).flatten(1, 2)  # channel shuffle
        x = self.norm(self.head(x))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.fc(x)


class TinyAttention(nn.Module):
    """timm-style attention (packed qkv, heads from attributes, explicit scale so head_dim pruning is exact)."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, attention + MLP blocks with layer scale, a head."""

    def __init__(self, dim: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.attn = TinyAttention(dim)
        self.gamma = nn.Parameter(torch.rand(dim))
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = x + self.gamma * self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(x[:, 0])


def by_module(graph, module):
    return [g for g in graph.groups if g.module == module]


def test_residual_stream_is_one_group():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    stem = g.group("stem.0.weight:0")
    mods = stem.modules()
    assert {"stem.0", "stem.1", "res.conv1", "res.conv2", "res.bn2", "dw.0", "dw.1", "dw.2", "grouped.0"} <= set(mods)
    assert stem.size == 16


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.bn_cat = nn.BatchNorm2d(16)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.out(self.bn_cat(torch.cat([self.a(x), self.b(x)], 1)))


def test_concat_groups_keep_offsets():
    g = build_graph(CatNet(), torch.randn(1, 3, 8, 8))
    ga = g.group("a.weight:0")
    bn = [m for m in ga.members if m.module == "bn_cat" and m.attr == "weight"][0]
    assert bn.index[:8].tolist() == list(range(8)) and (bn.index[8:] == -1).all()
    gb = g.group("b.weight:0")
    bnb = [m for m in gb.members if m.module == "bn_cat" and m.attr == "weight"][0]
    assert (bnb.index[:8] == -1).all() and bnb.index[8:].tolist() == list(range(8))
    assert len(g.groups) == 2


def test_se_block_couples_what_it_scales():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    ga = g.group("a.weight:0")
    assert {"b", "se.expand", "bn_cat"} <= set(ga.modules())
    assert ga.size == 16  # a + b (joined by the SE scale); right.0 joins a column-wise (shuffle)


def test_grouped_conv_and_groupnorm_make_equal_rows():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    grp = g.group("grouped.0.weight:0")
    assert grp.rows is not None and tuple(grp.rows.shape) == (4, 8)
    stem = g.group("stem.0.weight:0")
    assert stem.rows is not None and tuple(stem.rows.shape) == (4, 4)  # grouped conv input side


def test_channel_shuffle_couples_both_halves():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    # a's channels (left half after SE, chunk) and right.0 output are laid out [2, 8] by the shuffle view
    ga = g.group("a.weight:0")
    assert any(m.module == "right.0" for m in ga.members)
    assert ga.rows is not None and tuple(ga.rows.shape) == (2, 8)


def test_native_channel_shuffle_joins_columns():
    class Shuffle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.out(F.channel_shuffle(torch.cat([self.a(x), self.b(x)], 1), 2))

    g = build_graph(Shuffle(), torch.randn(1, 3, 4, 4))
    assert len(g.groups) == 1 and g.groups[0].size == 4  # a_j and b_j are removed together
    out = [m for m in g.groups[0].members if m.module == "out"][0]
    assert out.index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_linear_after_flatten_has_spatial_multiplicity():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    head = g.group("head.weight:0")
    fc = [m for m in head.members if m.module == "fc" and m.attr == "weight"][0]
    assert fc.dim == 1 and fc.index.tolist() == [c for c in range(24) for _ in range(4)]
    assert any(m.module == "norm.ln" and m.attr == "weight" for m in head.members)


def test_classifier_and_input_are_never_in_a_group():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16))
    for grp in g.groups:
        for m in grp.members:
            assert not (m.module == "fc" and m.dim == 0)
            assert not (m.module == "stem.0" and m.dim == 1)


def test_attention_heads_and_tokens():
    g = build_graph(TinyViT(), torch.randn(1, 3, 16, 16))
    stream = g.group("patch.weight:0")
    names = {(m.module, m.attr) for m in stream.members}
    assert {("", "cls_token"), ("", "pos_embed"), ("", "gamma"), ("ln1", "weight"), ("head", "weight")} <= names
    qkv = g.group("attn.qkv.weight:0")
    assert qkv.size == 64  # q/k joined (32) + v (32)
    assert qkv.rows is not None and tuple(qkv.rows.shape) == (8, 8)
    assert ("attn", (3, 4, 8)) in qkv.scopes


def test_ignore_freezes_a_module():
    g = build_graph(TinyNet(), torch.randn(1, 3, 16, 16), ignore=["head"])
    assert not any(grp.module == "head" for grp in g.groups)


def test_unsupported_op_names_the_module():
    class Weird(nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=1).values

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Weird(), nn.Conv2d(8, 4, 1))
    with pytest.raises(UnsupportedOpError, match=r"'sort'.*'1'.*ignore"):
        build_graph(model, torch.randn(1, 3, 8, 8))
    g = build_graph(model, torch.randn(1, 3, 8, 8), ignore=["1"])
    assert all(grp.module != "0" for grp in g.groups)


def test_trace_leaves_no_marks_and_keeps_mode():
    model, x = TinyNet().train(), torch.randn(1, 3, 16, 16)
    build_graph(model, x)
    assert model.training and "_pk_ids" not in x.__dict__


def test_scalar_scale_does_not_couple_channels():
    class Affine(nn.Module):  # timm LearnableAffineBlock: one scale for all channels
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.out(self.scale * self.conv(x))

    g = build_graph(Affine(), torch.randn(1, 3, 4, 4))
    assert len(g.groups) == 1 and g.groups[0].size == 8 and g.groups[0].pinned is None


class BiasedHeads(nn.Module):
    """Attention with a per-head bias: from an MLP over positions (timm swinv2_cr) or a gathered table (MaxViT),
    applied with einsum (the table) or as an added score term (the MLP)."""

    def __init__(self, table: bool, dim: int = 16, heads: int = 4, tokens: int = 5) -> None:
        super().__init__()
        self.num_heads, self.table, self.tokens = heads, table, tokens
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(2, 8), nn.Linear(8, heads)
        self.bias_table = nn.Parameter(torch.randn(2 * tokens - 1, heads))
        pos = torch.arange(tokens)
        self.register_buffer("index", (pos[:, None] - pos[None, :] + tokens - 1).reshape(-1), persistent=False)
        self.register_buffer("coords", torch.randn(tokens * tokens, 2), persistent=False)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.table:
            bias = self.bias_table[self.index].view(n, n, -1).permute(2, 0, 1)
            scores = torch.einsum("bhid,bhjd->bhij", q, k) + bias
            out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
        else:
            bias = self.fc2(torch.relu(self.fc1(self.coords))).view(n, n, -1).permute(2, 0, 1)
            out = ((q @ k.transpose(-2, -1)) * 0.5 + bias).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1)) + x


def test_a_per_head_bias_goes_with_its_head_and_is_no_channel():
    import copy

    import prunekit
    from prunekit.apply.structured import zero_channels

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    for table in (False, True):
        model = BiasedHeads(table).double().eval()
        g = build_graph(model, x)
        assert not any(grp.module == "fc2" for grp in g.groups)  # the bias MLP's outputs are heads, not channels
        qkv = next(grp for grp in g.groups if grp.module == "qkv")
        assert qkv.size == 32 if table else len(qkv.heads) == 4  # v's channels stay channels (not one per head)
        if table:
            continue  # einsum attention: heads are not linked as units; head dims are pruned
        small = prunekit.prune(model, x, ratio=0.5, prune_heads=True)
        assert small.fc2.weight.shape[0] == 2 and small.qkv.weight.shape[0] == 24  # the bias rows of removed heads
        masked = zero_channels(copy.deepcopy(model), small.prunekit_plan)
        assert torch.allclose(small(x), masked(x), atol=1e-12)


def test_a_standardised_weight_marks_its_inputs_normalised():
    class WS(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            w = F.batch_norm(self.b.weight.reshape(1, 8, -1), None, None, training=True).reshape_as(self.b.weight)
            return self.c(F.conv2d(torch.relu(self.a(x)), w, self.b.bias))

    g = build_graph(WS(), torch.randn(1, 3, 4, 4))
    assert g.group("a.weight:0").normalized and not g.group("b.weight:0").normalized


def test_sdpa_default_scale_makes_heads_go_whole():
    """F.scaled_dot_product_attention without ``scale`` divides by sqrt(head size): shrinking heads would change
    every softmax, so a plan removes whole heads (timm's fused Attention) and the result equals the masked original."""
    import copy

    import prunekit
    from prunekit.apply.structured import zero_channels

    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads, self.head_dim = 4, 4
            self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)) + x

    torch.manual_seed(0)
    model, x = Fused().double().eval(), torch.randn(2, 5, 16, dtype=torch.float64)
    small = prunekit.prune(model, x, ratio=0.5)
    assert (small.num_heads, small.head_dim) == (2, 4)
    masked = zero_channels(copy.deepcopy(model), small.prunekit_plan)
    assert torch.allclose(small(x), masked(x), atol=1e-12)


def test_a_norm_over_each_heads_dims_pins_them_but_a_stream_norm_does_not():
    """q/k norm (one weight over head_dim, shared by every head): dims cannot go, heads can. A stream LayerNorm whose
    tokens come from two layers (a class token from its own Linear, as in PiT) stays an ordinary prunable stream."""
    class QKNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads, self.head_dim = 4, 4
            self.qkv, self.proj, self.q_norm = nn.Linear(16, 48), nn.Linear(16, 16), nn.LayerNorm(4)
            self.cls, self.patch, self.norm, self.out = nn.Linear(16, 16), nn.Linear(16, 16), nn.LayerNorm(16), \
                nn.Linear(16, 3)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(self.q_norm(q), k, v, scale=0.5)
            h = self.proj(a.transpose(1, 2).reshape(b, n, -1))
            tokens = torch.cat([self.cls(h[:, :1]), self.patch(h[:, 1:])], 1)
            return self.out(self.norm(tokens).mean(1))

    g = build_graph(QKNorm(), torch.randn(2, 5, 16))
    qkv = next(grp for grp in g.groups if grp.module == "qkv")
    assert qkv.heads and len(qkv.heads) == 4 and qkv.dim_pinned is not None and qkv.prunable
    stream = g.group("cls.weight:0")  # the tokens: the class token's Linear and the patches' Linear, one stream
    assert {"patch", "norm", "out"} <= set(stream.modules()) and stream.normalized and stream.dim_pinned is None
