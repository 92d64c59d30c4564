"""Per-layer sensitivity: how much a score (validation accuracy) falls when one layer alone loses channels.

    sens = layer_sensitivity(model, x, score_fn, ratios=(0.25, 0.5, 0.75), recalibrate=recal)
    print(sens.table())           # one row per layer: its MACs share and the score drop at each ratio

Every (layer, ratio) cell prunes a copy of the model in that layer only (the groups the layer produces, with the
plan's usual safety rules), optionally re-estimates BatchNorm statistics (``recalibrate``), and scores it. Layers whose drop stays small at high ratios are where a
budget search (``prunekit.allocate.budget_search``) takes channels first; the classic tool for choosing per-layer
ratios by hand (Li et al. 2017, "Pruning Filters for Efficient ConvNets", section 4.2; Distiller's sensitivity
analysis).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from torch import nn

from ..apply.oneshot import pruned_copy
from ..errors import ConfigError
from ..graph import build_graph
from ..importance import score_groups
from ..measure import InputSpec, count_macs

ScoreFn = Callable[[nn.Module], float]


@dataclass
class Sensitivity:
    """Score of the model with one layer pruned, per layer and ratio; ``baseline`` = the unpruned score."""

    layers: List[str]
    ratios: List[float]
    baseline: float
    scores: Dict[str, List[float]]
    macs_saved: Dict[str, List[float]]  # fraction of the whole model's MACs saved by that cell
    channels: Dict[str, int] = field(default_factory=dict)  # channels of the layer's largest group
    settings: Dict[str, Any] = field(default_factory=dict)

    def drop(self, layer: str, ratio: float) -> float:
        """Baseline minus the score with ``layer`` pruned at ``ratio`` (0 at ratio 0)."""
        if ratio <= 0:
            return 0.0
        return self.baseline - self.scores[layer][self.ratios.index(ratio)]

    def to_json(self) -> str:
        """The scan as indented JSON (read back with ``from_json``)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Sensitivity":
        """A Sensitivity from ``to_json``'s text."""
        return cls(**json.loads(text))

    def table(self, scale: float = 1.0) -> str:
        """Plain-text table: layer, channels, share of the model's MACs saved at the largest ratio, drop at each
        ratio (times ``scale``:
        100 shows an accuracy in points)."""
        width = max([len(n) for n in self.layers] + [5])
        head = f"{'layer':<{width}}  {'ch':>5}  {'-MACs@' + format(self.ratios[-1], 'g'):>10}  " + "  ".join(
            f"{'drop@' + format(r, 'g'):>9}" for r in self.ratios)
        lines = [f"baseline score {scale * self.baseline:.4g}", head]
        for n in self.layers:
            drops = "  ".join(f"{scale * self.drop(n, r):>9.3f}" for r in self.ratios)
            lines.append(f"{n:<{width}}  {self.channels.get(n, 0):>5}  {self.macs_saved[n][-1]:>10.2%}  {drops}")
        return "\n".join(lines)


def _check_ratios(ratios: Iterable[float]) -> List[float]:
    out = sorted({float(r) for r in ratios})
    if not out or any(not 0.0 < r < 1.0 for r in out):
        raise ConfigError(f"sensitivity ratios {list(ratios)} must be fractions in (0, 1), e.g. 0.25 0.5 0.75")
    return out


def overrides_pruner(model: nn.Module, inputs: Tuple[Any, ...], criterion: str,
                     make_plan_kwargs: Dict[str, Any]) -> Tuple[Any, Callable[[Dict[str, float]], nn.Module]]:
    """Trace and score ``model`` once; return its dependency graph and ``prune(overrides)``, which gives a pruned
    copy with ratio 0 everywhere except the named layers (``make_plan_kwargs`` as ``make_plan`` takes them)."""
    graph = build_graph(model, inputs, ignore=list(make_plan_kwargs.get("ignore", ())))
    scores = score_groups(graph, model, criterion, ctx={"data": make_plan_kwargs.get("data"),
                                                        "seed": make_plan_kwargs.get("seed", 0)})
    options = {k: v for k, v in make_plan_kwargs.items() if k != "overrides"}

    def prune(overrides: Dict[str, float]) -> nn.Module:
        return pruned_copy(model, inputs, graph, ratio=0.0, criterion=criterion, overrides=overrides,
                           scores=scores, **options)

    return graph, prune


def layer_sensitivity(model: nn.Module, example_inputs: Any, score_fn: ScoreFn,
                      ratios: Sequence[float] = (0.25, 0.5, 0.75), criterion: str = "l2",
                      recalibrate: Optional[Callable[[nn.Module], Any]] = None,
                      layers: Optional[Sequence[str]] = None, progress: bool = False,
                      resume: Optional[Sensitivity] = None, on_cell: Optional[Callable[[Sensitivity], Any]] = None,
                      **make_plan_kwargs: Any) -> Sensitivity:
    """Scan every prunable layer (or ``layers``) at every ratio; see the module doc.

    ``score_fn(model) -> float`` is higher-is-better (e.g. validation accuracy) and must not train the model;
    ``recalibrate(model)`` runs right after each prune (e.g. BatchNorm re-estimation); ``make_plan_kwargs``
    (round_to, ignore, min_channels, data, ...) are those of ``make_plan``. ``on_cell(partial)`` runs after every
    cell (save it to survive a stop); ``resume`` = such a partial scan of the same layers, ratios and settings:
    its cells and baseline are kept and only the missing cells run.
    """
    ratios = _check_ratios(ratios)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    graph, pruned = overrides_pruner(model, inputs, criterion, make_plan_kwargs)
    known = graph.prunable_modules()
    layers = list(layers) if layers is not None else known
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise ConfigError(f"layer {unknown[0]!r} has no prunable channels in this model; choose among "
                          f"{', '.join(known[:6])}{' ...' if len(known) > 6 else ''}")
    if not layers:
        raise ConfigError("the model has no prunable channel group; nothing to scan")
    dense_macs = count_macs(model, shape)[0]
    settings = {"criterion": criterion, **{k: v for k, v in make_plan_kwargs.items()
                                           if isinstance(v, (int, float, str, type(None)))}}
    if resume is not None and (resume.layers, resume.ratios, resume.settings) == (list(layers), ratios, settings):
        result = copy.deepcopy(resume)
    else:
        if recalibrate is not None:  # the cells are scored after re-estimation, so is the baseline (like with like)
            reference = copy.deepcopy(model)
            recalibrate(reference)
            baseline = float(score_fn(reference))
        else:
            baseline = float(score_fn(model))
        result = Sensitivity(layers=list(layers), ratios=ratios, baseline=baseline, scores={}, macs_saved={},
                             channels={n: max(g.size for g in graph.groups if g.module == n and g.prunable)
                                       for n in layers}, settings=settings)
    cells: List[Tuple[str, float]] = [(n, r) for n in layers for j, r in enumerate(ratios)
                                      if len(result.scores.get(n, [])) <= j]  # not scored yet
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="sensitivity", leave=False, dynamic_ncols=True)
    for name, ratio in cells:
        twin = pruned({name: ratio})
        saved = 1.0 - count_macs(twin, shape)[0] / dense_macs
        if recalibrate is not None:
            recalibrate(twin)
        result.scores.setdefault(name, []).append(float(score_fn(twin)))
        result.macs_saved.setdefault(name, []).append(saved)
        if on_cell is not None:
            on_cell(result)
    return result
