"""PFAM: the formula, its options, and the paper's property (least correlated filters are pruned first)."""
from __future__ import annotations

import math

import pytest
import torch

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import build_graph
from prunekit.importance import score_groups
from prunekit.importance.pfam import pfam_scores
from prunekit.plan import make_plan

X = torch.randn(1, 3, 32, 32)
GROUP = "features.3.weight:0"  # second conv of vgg_tiny: 16 filters of 16x3x3


def _naive(emb: torch.Tensor, t: float, include_self: bool) -> torch.Tensor:
    """The docstring formula, written as loops."""
    n = emb.shape[0]
    e = [v / max(float(v.norm()), 1e-12) for v in emb.double()]
    c = [[float(e[i] @ e[j]) for j in range(n)] for i in range(n)]
    out = []
    for i in range(n):
        ks = [k for k in range(n) if include_self or k != i]
        z = sum(math.exp(c[i][k] / t) for k in ks)
        out.append(sum(math.exp(c[i][j] / t) / z * abs(c[i][j]) for j in range(n) if j != i))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("t", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("include_self", [False, True])
def test_scores_match_formula(t, include_self):
    emb = torch.randn(7, 11, generator=torch.Generator().manual_seed(3))
    got = pfam_scores(emb, temperature=t, include_self=include_self)
    assert torch.allclose(got, _naive(emb, t, include_self), atol=1e-10)


def test_high_temperature_is_mean_abs_correlation():
    emb = torch.randn(6, 9, generator=torch.Generator().manual_seed(4))
    e = emb.double() / emb.double().norm(dim=1, keepdim=True)
    c = (e @ e.t()).abs().fill_diagonal_(0)
    assert torch.allclose(pfam_scores(emb, temperature=1e6), c.sum(1) / 5, atol=1e-6)


def _planted_model() -> torch.nn.Module:
    """Layer features.3: random filters, filter 2 copied into 6 others, filter 9 orthogonal to all the rest."""
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 4).eval()
    with torch.no_grad():
        w = model.features[3].weight  # [16, 16, 3, 3]
        for i in (4, 6, 8, 10, 12, 14):
            w[i] = w[2]
        flat = w.reshape(16, -1)
        others = torch.cat([flat[:9], flat[10:]])
        q, _ = torch.linalg.qr(others.t().double())
        v = torch.randn(flat.shape[1], dtype=torch.float64)
        v = v - q @ (q.t() @ v)
        flat[9] = (v / v.norm() * flat[0].norm()).float()
    return model


def test_uncorrelated_filter_ranked_last_duplicated_not():
    model = _planted_model()
    graph = build_graph(model, X)
    s = score_groups(graph, model, "pfam", ctx={}, normalize="none")[GROUP]
    order = torch.argsort(s)
    assert int(order[0]) == 9
    assert float(s[9]) < 1e-6
    for dup in (2, 4, 6, 8, 10, 12, 14):
        assert float(s[dup]) > 0.9  # attends to its copies: correlation 1
    keep = make_plan(model, X, ratio=0.25, criterion="pfam").groups
    removed = next(g for g in keep if g.key == GROUP).remove
    assert 9 in removed and not ({2, 4, 6, 8, 10, 12, 14} & set(removed))


def test_options_through_ctx():
    model = _planted_model()
    graph = build_graph(model, X)
    hot = score_groups(graph, model, "pfam", ctx={"pfam": {"temperature": 100.0}}, normalize="none")[GROUP]
    cold = score_groups(graph, model, "pfam", ctx={"pfam": {"temperature": 0.01}}, normalize="none")[GROUP]
    assert not torch.allclose(hot, cold)
    assert int(torch.argmin(hot)) == 9 and int(torch.argmin(cold)) == 9
    centered = score_groups(graph, model, "pfam", ctx={"pfam": {"center": True}}, normalize="none")[GROUP]
    assert centered.shape == (16,) and torch.isfinite(centered).all()


def test_fmap_embedding_ranks_dead_channel_last():
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 4).eval()
    with torch.no_grad():
        model.features[3].weight[7] = 0
        model.features[4].bias[7] = 0
    graph = build_graph(model, X)
    data = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]
    s = score_groups(graph, model, "pfam", ctx={"data": data, "pfam": {"embed": "fmap"}}, normalize="none")[GROUP]
    assert int(torch.argmin(s)) == 7


@pytest.mark.parametrize("opts, match", [({"temperature": 0}, "temperature"), ({"embed": "grads"}, "embed"),
                                         ({"temp": 1.0}, "unknown pfam option")])
def test_bad_options_are_config_errors(opts, match):
    model = _planted_model()
    graph = build_graph(model, X)
    with pytest.raises(ConfigError, match=match):
        score_groups(graph, model, "pfam", ctx={"pfam": opts})


def test_register_variant_is_a_named_criterion():
    from prunekit.importance.pfam import register_variant

    name = register_variant("pfam_test_hot", temperature=100.0)
    assert register_variant("pfam_test_hot", temperature=100.0) == name
    with pytest.raises(ConfigError, match="already exists"):
        register_variant("pfam_test_hot", temperature=0.5)
    model = _planted_model()
    graph = build_graph(model, X)
    via_name = score_groups(graph, model, name, ctx={}, normalize="none")[GROUP]
    via_ctx = score_groups(graph, model, "pfam", ctx={"pfam": {"temperature": 100.0}}, normalize="none")[GROUP]
    assert torch.equal(via_name, via_ctx)


def test_energy_variant_keeps_magnitude():
    """normalize=False: a small filter pointing the same way as a large one scores low (the cosine would tie
    them), a zero filter scores 0, and the planted uncorrelated filter still ranks below the duplicates."""
    emb = torch.randn(6, 9, generator=torch.Generator().manual_seed(5)).double()
    emb[1] = 0.01 * emb[0]
    emb[2] = 0
    cos = pfam_scores(emb, temperature=0.1)
    energy = pfam_scores(emb, temperature=0.1, normalize=False)
    assert float(energy[2]) == 0.0 and int(torch.argmin(energy)) == 2
    assert float(energy[1]) < 0.05 * float(energy[0])
    assert float(cos[1]) > 0.5 * float(cos[0])  # the cosine sees the small copy as highly correlated
    model = _planted_model()
    graph = build_graph(model, X)
    s = score_groups(graph, model, "pfam", ctx={"pfam": {"normalize": False}}, normalize="none")[GROUP]
    assert float(s[9]) < min(float(s[d]) for d in (2, 4, 6, 8, 10, 12, 14))


def test_variant_from_spec_reads_options_by_type():
    from prunekit.importance import CRITERIA
    from prunekit.importance.pfam import variant_from_spec

    assert variant_from_spec("l2") == "l2"
    name = variant_from_spec("pfam@normalize=false,temperature=1,embed=fmap")
    opts = CRITERIA.get(name).pfam_options
    assert opts["normalize"] is False and opts["temperature"] == 1.0 and opts["embed"] == "fmap"
    with pytest.raises(ConfigError, match="pfam only"):
        variant_from_spec("l2@temperature=1")
