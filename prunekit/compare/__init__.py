"""Which channel criterion keeps the most accuracy at a given MACs/params reduction, same budget for all.

    prunekit compare --data ../shared/data/ucmerced --model vgg_small --criteria attention_scale fpgm l1 random \\
        --reduce macs=0.5 macs=0.7 --seeds 0 1 2 --base-epochs 30 --finetune-epochs 20 --out runs/compare

Cells (criterion x target x seed, plus the unpruned reference per seed) run in order; each writes one JSON file
named by every setting that changes its result, so an interrupted comparison resumes where it stopped and a rerun
with more seeds or criteria runs only what is missing. The table (mean ± sd over seeds) and the accuracy-vs-MACs
plot are rebuilt from every matching file. Protocol: :mod:`prunekit.compare.cells`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from ..allocate.reduce import parse_reduce
from ..errors import ConfigError
from ..files import atomic_path
from ..importance import CRITERIA
from ..importance.pfam import variant_from_spec
from .cells import ATTENTION_FORMS, FINETUNE_LR, key_of, run_cell
from .table import write_report

__all__ = ["run_compare", "write_report", "cells_of", "check", "key_of", "ATTENTION_FORMS", "FINETUNE_LR"]


def cells_of(opts: Any) -> List[Tuple[str, str, int]]:
    """(criterion, target, seed) in run order: the unpruned references first, then seed by seed."""
    cells = [] if opts.skip_unpruned else [("unpruned", "none", s) for s in opts.seeds]
    return cells + [(c, t, s) for s in opts.seeds for t in opts.reduce for c in opts.criteria]


def check(opts: Any) -> None:
    """Refuse unknown criteria and malformed targets before any training is spent."""
    for t in opts.reduce:
        parse_reduce(t)
    for c in opts.criteria:
        if ATTENTION_FORMS.get(c, {}).get("budget"):  # its training needs a penalty to aim and known counts
            if opts.attention_sparsity <= 0:
                raise ConfigError(f"{c} aims the gate penalty: give --attention-sparsity > 0 (e.g. 3e-2)")
            if opts.scope != "uniform":
                raise ConfigError(f"{c} needs --scope uniform (per-layer counts known before training)")
        if c in ATTENTION_FORMS:
            continue
        try:
            CRITERIA.get(variant_from_spec(c))
        except ConfigError:
            known = ", ".join(sorted(set(CRITERIA.names()) | set(ATTENTION_FORMS)))
            raise ConfigError(f"unknown criterion {c!r}; choose one of: {known} (pfam options as "
                              "pfam@temperature=0.5)") from None
    if opts.base_seed is not None and opts.base_seed < 0:
        raise ConfigError(f"--base-seed {opts.base_seed} must be >= 0")


def run_compare(opts: Any, data: Any, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Run every missing cell of ``opts`` on ``data`` (a SceneDataset); returns the rows run now."""
    check(opts)
    Path(opts.results).mkdir(parents=True, exist_ok=True)
    ratios: Dict[str, Any] = {}
    done = []
    for crit, target, seed in cells_of(opts):
        path = Path(opts.results) / f"{key_of(opts, crit, target, seed)}.json"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        row = run_cell(opts, data, crit, target, seed, ratios)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(row, indent=1, default=str))
        done.append(row)
        log(f"{path.stem}: test {row['test_acc']:.4f} (before ft {row.get('test_acc_before_ft', '-')}), "
            f"MACs -{row['macs_reduction']:.1%}, {row['seconds']} s")
    return done
