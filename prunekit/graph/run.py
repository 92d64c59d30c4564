"""One traced forward: the model run once under the recorder, every op's handler (ops_*.py) joining channels.

The handlers register themselves in ``trace.HANDLERS`` when their modules are imported, which this module does.
"""
from __future__ import annotations

from typing import Any, List

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from . import ops_attention, ops_elementwise, ops_layers, ops_movement  # noqa: F401  (register the handlers)
from .trace import Recorder, Recording, _Mode, flatten_outputs


def run_trace(model: nn.Module, example_inputs: Any, ignore: List[str]) -> Recording:
    """Run ``model(*example_inputs)`` once under the recorder; inputs and outputs are frozen."""
    rec = Recorder(model, ignore)
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    inputs = tuple(x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs)
    for x in inputs:
        if isinstance(x, torch.Tensor):
            rec.set_ids(x, torch.zeros((), dtype=torch.long).expand(x.shape))
    names = {id(m): n for n, m in model.named_modules()}

    def pre(mod, args):
        name = names.get(id(mod), "?")
        rec.stack.append(name)
        rec.visited.add(name)
        mod.__dict__["_pk_in"] = args[0] if args and isinstance(args[0], torch.Tensor) else None

    def post(mod, args, output):
        name = rec.stack.pop()
        x = mod.__dict__.pop("_pk_in", None)
        if name and x is not None and isinstance(output, torch.Tensor) and output.shape == x.shape:
            roots = output.__dict__.get("_pk_roots", ())
            if id(x) in roots:
                rec.residual_blocks.append(name)

    # Global hooks (two registrations) instead of two per module: registering thousands of handles is slow.
    def gpre(mod, args):
        if id(mod) in names:
            pre(mod, args)

    def gpost(mod, args, output):
        if id(mod) in names:
            post(mod, args, output)

    hooks = [register_module_forward_pre_hook(gpre), register_module_forward_hook(gpost)]
    try:
        with torch.no_grad(), _Mode(rec):
            out = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
        for mod in model.modules():
            mod.__dict__.pop("_pk_in", None)
    for t in flatten_outputs(out):
        i = rec.ids(t) if "_pk_ids" in t.__dict__ else None
        if i is not None:
            rec.atoms.freeze(i)
    recording = rec.finish()
    recording.output_shapes = [t.shape for t in flatten_outputs(out)]
    return recording
