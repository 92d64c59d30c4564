"""The one options model: a pydantic model per command that CLI flags and YAML recipes both parse into.

Its validators hold the flag rules (ranges, formats), so a bad value is refused with one line wherever it came
from; ``cli/`` only turns flags into these models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .allocate.reduce import parse_reduce
from .allocate.round_to import AUTO, resolve_round_to
from .device import pick_device
from .errors import ConfigError
from .files import check_writable
from .importance import BLOCK_CRITERIA
from .measure.state import parse_input_size
from .paths import check_output_file, check_output_folder
from .schedules.base import check_criterion
from .schedules.config import ScheduleTiming
from .sparse.nm import parse_nm
from .train.config import TrainConfig


MAX_RECIPE_BYTES = 256 * 1024  # a recipe is a page of option: value lines; anything near this size is not one
MAX_RECIPE_DEPTH = 8  # option: [list] is depth 2; PyYAML's parser slows down sharply on deep nesting


def load_yaml(path: Path) -> Any:
    """The YAML document in recipe ``path``. A recipe is untrusted text, so it is refused (ConfigError, one line)
    when it is not UTF-8 text (a picture passed by mistake), larger than :data:`MAX_RECIPE_BYTES`, nested deeper
    than :data:`MAX_RECIPE_DEPTH`, or uses an alias (``*name``). Aliases and depth are checked on the event stream,
    before anything is built: a few nested aliases ("billion laughs") expand to gigabytes once a value is copied or
    printed. Syntax errors stay ``yaml.YAMLError`` for the caller to word.
    """
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {size:,} bytes, not a recipe (a short YAML file of option: value "
                          f"lines, at most {MAX_RECIPE_BYTES:,} bytes); pass the YAML recipe to --config")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not a text file (byte {e.start} is not UTF-8); pass a YAML recipe of "
                          "option: value lines to --config") from None
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"recipe {path} uses the YAML alias *{event.anchor[:40]} at line {line}; aliases are "
                              "refused (nested ones expand without bound): write the value out")
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        if depth > MAX_RECIPE_DEPTH:
            raise ConfigError(f"recipe {path} nests values {depth} deep at line {line}; a recipe is a mapping of "
                              "option: value (a value at most a short list)")
    return yaml.safe_load(text)


def parsed_by(parse: Callable[[str], Any]) -> Callable[[type, Optional[str]], Optional[str]]:
    """A field check: the text is kept as given once ``parse`` accepts it (its ConfigError, a ValueError, names the
    bad value and the format); None passes."""
    def check(cls: type, v: Optional[str]) -> Optional[str]:
        if v is not None:
            parse(v)
        return v
    return check


class RunOptions(BaseModel):
    cli_group: ClassVar[str] = "run: seed, device, output"
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    seed: int = Field(0, description="random seed (init, batches, and the data split, except for a trained "
                                     "checkpoint, which keeps the split it recorded)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    out: Optional[Path] = Field(None, description="output folder")
    json_output: bool = Field(False, description="print one JSON object instead of tables",
                              json_schema_extra={"flag": "--json"})
    progress: bool = Field(True, description="per epoch: a bar with loss and accuracy on a terminal, and one line "
                                             "(the only output when stderr is not a terminal); --no-progress: none")

    @field_validator("out")
    @classmethod
    def _out_is_a_folder(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None:
            check_writable(check_output_folder(v, "--out"), "--out")
        return v


class DataOptions(BaseModel):
    cli_group: ClassVar[str] = "data"
    data: Optional[str] = Field(None, description="class-per-folder dataset (UC Merced, AID, NWPU-RESISC45, EuroSAT, "
                                                  "RSSCN7 layouts), or 'embedded' (the UC Merced 64 px subset shipped "
                                                  "with prunekit); default: for a trained checkpoint the folder it "
                                                  "records, for a model name the embedded subset")
    image_size: int = Field(64, ge=8, le=1024, description="square input size in pixels")
    test_frac: float = Field(0.2, gt=0, lt=1, description="test fraction per class (UC Merced protocol: 0.2)")
    val_frac: float = Field(0.1, ge=0, lt=1, description="validation fraction of the train part, for decisions")
    on_bad_image: Literal["skip", "fail"] = Field("skip", description="unreadable images: skip with a count, or fail")


class LogOptions(BaseModel):
    cli_group: ClassVar[str] = "training logs (<out>/history.csv is always written)"
    tensorboard: Optional[bool] = Field(None, description="TensorBoard event files under <out>/tb/<phase>/; not "
                                                          "given: written when the tensorboard package is installed")


class TrainOptions(RunOptions, LogOptions, DataOptions, TrainConfig):
    model: str = Field("vgg_small", description="vgg_small, resnet_small, torchvision/<arch>, timm/<arch>")
    weights: Optional[str] = Field(None, description="local weights to start from (.safetensors or state_dict .pth)")


class EvalOptions(RunOptions, DataOptions):
    checkpoint: str = Field(..., description="prunekit checkpoint (.safetensors)", json_schema_extra={"positional": True})
    split: Literal["train", "val", "test"] = Field("test", description="which split to evaluate")
    batch_size: int = Field(256, ge=1)


class BalanceOptions(BaseModel):
    """The sensitivity scan and the accuracy-budget search (``prunekit.allocate``)."""
    cli_group: ClassVar[str] = "sensitivity scan and accuracy budget (--max-drop)"

    sensitivity_ratios: list[float] = Field([0.25, 0.5, 0.75], description="fractions of one layer's channels "
                                            "removed in the per-layer sensitivity scan")
    sensitivity_split: Literal["train", "val", "test"] = Field(
        "val", description="split the scan and the budget search score on (keep test for the final report)")
    recal_batches: int = Field(8, ge=0, description="training batches that re-estimate BatchNorm statistics "
                                                    "after each trial prune (0: off)")
    sensitivity_file: Optional[str] = Field(None, description="reuse a scan that prunekit sensitivity wrote (its "
                                                              "sensitivity.json) instead of scanning again")
    budget_epochs: int = Field(0, ge=0, description="--max-drop: recovery fine-tuning epochs each candidate plan "
                                                    "(and the unpruned model) gets before the accuracy check; 0 "
                                                    "checks right after the cut, which is strict")

    @field_validator("sensitivity_ratios")
    @classmethod
    def _ratios_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < r < 1 for r in v):
            raise ValueError(f"--sensitivity-ratios {v}: give fractions in (0, 1), e.g. 0.25 0.5 0.75")
        return v


class RoundToOption(BaseModel):
    cli_group: ClassVar[str] = "structured channel widths"
    round_to: Optional[str] = Field(
        None, description="structured: keep channel counts multiples of N (an int), 'auto' (the multiple eager "
                          "PyTorch runs fastest with on this machine) or 'auto-ort' (ONNX Runtime's, for models "
                          "deployed through prunekit export --onnx), each measured once and cached; none: exact "
                          "counts")

    @field_validator("round_to")
    @classmethod
    def _round_to_format(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in AUTO and not (str(v).isdigit() and int(v) >= 1):
            raise ValueError(f"--round-to {v}: use a positive int, {', '.join(AUTO)} or none")
        return v

    def round_to_value(self) -> Optional[int]:
        """``round_to`` as ``make_plan`` takes it: None or an int ('auto' / 'auto-ort' measured once, cached).
        Plain 'auto' in a run on a CUDA device means that GPU's multiple at ``--latency-dtype``, not the CPU's."""
        value = int(self.round_to) if self.round_to is not None and self.round_to.isdigit() else self.round_to
        device = getattr(self, "device", None)
        on = pick_device(device) if value == "auto" and device is not None else None
        return resolve_round_to(value, device=on, dtype=getattr(self, "latency_dtype", "fp32"))


class DepthOptions(BaseModel):
    """Depth pruning: whole identity-residual blocks replaced by identity (``make_plan(depth=...)``)."""
    cli_group: ClassVar[str] = "structured depth (whole residual blocks)"

    depth: float = Field(0.0, ge=0, lt=1, description="structured: fraction of the identity-residual blocks to "
                                                      "remove (with no --ratio / --reduce typed, no channel goes)")
    depth_blocks: Optional[int] = Field(None, ge=1, description="structured: how many residual blocks to remove "
                                                                "(instead of --depth)")
    depth_criterion: str = Field("magnitude", description="which blocks go first: magnitude (mean squared "
                                                          "weight), contribution (how much the block changes the "
                                                          "stream on calibration batches), skip_loss (loss increase "
                                                          "when the block alone is skipped)")

    @field_validator("depth_criterion")
    @classmethod
    def _known_depth_criterion(cls, v: str) -> str:
        BLOCK_CRITERIA.get(v)  # ConfigError (a ValueError) names the choices
        return v

    @model_validator(mode="after")
    def _one_depth_target(self) -> "DepthOptions":
        if self.depth > 0 and self.depth_blocks:
            raise ValueError(f"give --depth {self.depth} (a fraction of blocks) or --depth-blocks "
                             f"{self.depth_blocks}, not both")
        return self

    def wants_depth(self) -> bool:
        return self.depth > 0 or bool(self.depth_blocks)


class StartOptions(BaseModel):
    """The model pruned, and the training that runs first when it is a name without weights."""
    cli_group: ClassVar[str] = "start: the model pruned (trained here first only when --epochs is given)"

    model: str = Field("vgg_small", description="a trained prunekit checkpoint (.safetensors), or a model name "
                                                "(vgg_small, resnet_small, torchvision/<arch>, timm/<arch>) with "
                                                "--weights, or with --epochs to train it here first")
    weights: Optional[str] = Field(None, description="local weights for a model name (.safetensors or state_dict "
                                                     ".pth)")
    epochs: Optional[int] = Field(None, ge=0, description="train a model name from scratch for this many epochs "
                                                          "before pruning (a --schedule prunes during them; 0: prune "
                                                          "the random init); never implied")
    batch_size: int = Field(64, ge=1, description="training and fine-tuning batch size")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="training and fine-tuning optimizer")
    lr: Optional[float] = Field(None, gt=0, description="training peak lr (default: the optimizer's recipe)")
    slimming: float = Field(0.0, ge=0, description="Network Slimming: L1 penalty on BN scales while training from "
                                                   "scratch (use with --criterion bn_scale; typical 1e-4)")

    def starts_trained(self) -> bool:
        """A checkpoint path, or a name with ``--weights``: nothing to train before pruning."""
        return self.weights is not None or Path(self.model).suffix == ".safetensors" or Path(self.model).is_file()


class TargetOptions(BaseModel):
    """What every mode reads: which weights or channels go, how many, and by which score."""
    cli_group: ClassVar[str] = "what to remove (every mode)"

    method: Literal["unstructured", "structured"] = Field(
        "unstructured", description="remove single weights (masks) or whole channels (smaller dense model)",
        json_schema_extra={"consts": {"--unstructured": "unstructured", "--structured": "structured"}})
    ratio: Optional[float] = Field(None, ge=0, lt=1, description="fraction of weights (unstructured) or of channels "
                                                                 "(structured) removed (default: 0.5 unless "
                                                                 "--reduce, --max-drop or --depth sets the cut)")
    reduce: Optional[str] = Field(None, description="structured: a target instead of --ratio, e.g. params=0.4, "
                                                    "macs=2x (measured on the original model), or latency=2x "
                                                    "(one-shot: blocks, channels or both, whichever reaches the "
                                                    "latency measured here keeping the most MACs); a target no "
                                                    "plan reaches is refused before any training (see --closest)")
    closest: bool = Field(False, description="with --reduce: when the target cannot be reached, prune as close as "
                                             "possible (and say so) instead of refusing")
    scope: Literal["uniform", "global"] = Field(
        "uniform", description="uniform: the same ratio in every layer; global: one threshold across layers",
        json_schema_extra={"consts": {"--global": "global"}, "renamed_values": {"layer": "uniform"}})
    criterion: str = Field("l1", description="importance score: l1, l2, fpgm, bn_scale, taylor, mean_activation, "
                                             "apoz, attention, pfam, pfam_energy, pfam_fmap, random (structured); "
                                             "l1, lamp, erk (unstructured)")
    calib_batches: int = Field(4, ge=1, description="training batches that data-driven criteria score on")
    ignore: List[str] = Field([], description="module names left whole (e.g. a classifier head you need unchanged, "
                                              "or a module whose op pruning cannot follow)")

    _reduce_format = field_validator("reduce")(parsed_by(lambda text: parse_reduce(text, measured=True)))


class FinetuneOptions(BaseModel):
    cli_group: ClassVar[str] = "fine-tuning after pruning"

    finetune_epochs: int = Field(10, ge=0, description="fine-tuning epochs after pruning (a --schedule on a trained "
                                                       "model runs during them)")
    finetune_lr: Optional[float] = Field(None, gt=0, description="fine-tuning peak lr (default: a fifth of the "
                                                                 "training lr)")
    distill: bool = Field(False, description="fine-tune with knowledge distillation from the model before pruning "
                                             "(its soft predictions at temperature 4, weight 0.7, beside the labels)")


class UnstructuredOptions(BaseModel):
    cli_group: ClassVar[str] = "unstructured / N:M: single weights masked (--unstructured, the default)"

    nm: Optional[str] = Field(None, description="N:M semi-structured sparsity instead of --ratio, e.g. 2:4 "
                                                "(one-shot)")
    quantize: Optional[Literal["fp16", "bf16", "int8", "kmeans4"]] = Field(
        None, description="value format of the compressed sparse checkpoint (default: fp32)")
    sparse_kernels: bool = Field(False, description="time torch sparse (CSR) kernels against dense per layer on this "
                                                     "CPU, record the layers where sparse is faster in the checkpoint; "
                                                     "prunekit.load(path, sparse_kernels=True) replays them")

    _nm_format = field_validator("nm")(parsed_by(parse_nm))


class StructuredOneShotOptions(BaseModel):
    cli_group: ClassVar[str] = "structured one-shot: how the cut is shared out (--structured, no --schedule)"

    allocation: Literal["uniform", "latency", "depth", "fastest"] = Field(
        "uniform", description="the same ratio in every layer (uniform), latency-aware (each group's latency saving "
                               "per MAC measured on this device decides its ratio; needs --reduce), depth (the "
                               "fewest whole residual blocks that reach --reduce, no channel removed), or fastest "
                               "(--reduce split between whole blocks and channels, the split timed fastest here at "
                               "--latency-batch)")
    max_drop: Optional[float] = Field(
        None, ge=0, description="per-layer ratios from a sensitivity scan: the most MACs removed while validation "
                                "accuracy drops at most this many points (right after the cut, or after "
                                "--budget-epochs of recovery); instead of --ratio / --reduce")


class LatencyOptions(BaseModel):
    cli_group: ClassVar[str] = "latency timing (--allocation latency / fastest, --reduce latency=..., and the speed " \
                               "guard of a structured run)"

    latency_runtime: Literal["eager", "ort", "cuda"] = Field(
        "eager", description="time the probes and candidates in eager PyTorch, in ONNX Runtime or on the GPU (the "
                             "runtime the model will be deployed in; ort: pair with --round-to auto-ort; cuda: CUDA "
                             "events at --latency-dtype, channels-last, pair with --round-to auto-cuda[-bf16|-fp16]); "
                             "cuda also times the speed guard")
    latency_dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="--latency-runtime cuda: the autocast dtype the GPU timings (and the speed guard) run at")
    latency_batch: int = Field(
        1, ge=1, description="time the candidates at this batch size (the one the model will run at; which split is "
                             "fastest can differ between 1 and 32)")
    latency_cache: Optional[str] = Field(
        "auto", description="--allocation latency: folder keeping the timings per device and architecture, so the "
                            "same architecture is timed once (auto: $PRUNEKIT_CACHE/latency or "
                            "~/.cache/prunekit/latency; none: measure every time)")


class AttentionOptions(BaseModel):
    cli_group: ClassVar[str] = "attention criterion (--structured --criterion attention)"

    attention_epochs: int = Field(3, ge=0, description="epochs training the SE attention modules")
    attention_mode: Literal["frozen", "joint"] = Field("frozen", description="train attention alone or with the "
                                                                            "backbone")
    attention_sparsity: float = Field(0.0, ge=0, description="L1 penalty on attention outputs")
    attention_reduction: int = Field(8, ge=1, description="SE bottleneck reduction ratio")
    attention_score: Literal["gate", "gate_x_scale", "gate_gm", "gate_x_scale_gm"] = Field(
        "gate_x_scale", description="rank channels by mean attention gate x |BN gamma| (the channel's output scale "
                                    "after attention; chosen on validation), or by the mean gate alone; _gm: "
                                    "times the attention-weighted distance to the layer's other filters")
    attention_removal: Literal["fold", "drop"] = Field("fold", description="fold the mean attention into the "
                                                                          "layer, or drop it")
    attention_budget: bool = Field(False, description="aim --attention-sparsity at only as many channels per layer as "
                                                      "the plan removes: keeps the most accuracy right after pruning "
                                                      "(for little or no fine-tuning); with long fine-tuning pair it "
                                                      "with --attention-removal drop (docs/criteria.md)")


class ReportOptions(BaseModel):
    cli_group: ClassVar[str] = "measure and report"

    latency: bool = Field(True, description="measure latency before/after")
    deploy: Literal["eager", "fold_bn", "channels_last", "compile", "ort", "cuda_graph"] = Field(
        "eager", description="time the before/after latency with both models in this deploy form "
                             "(prunekit.deploy): eager as built, fold_bn (BN folded), channels_last, compile "
                             "(torch.compile, inductor), ort (ONNX Runtime), cuda_graph (GPU: CUDA graph replay); the "
                             "checkpoint stays a plain model")
    dry_run: bool = Field(False, description="print the plan (per-layer widths, params and MACs before/after, what is "
                                             "skipped and why) and the training that would run with an estimated "
                                             "time; nothing is trained or written")


class PruneOptions(RunOptions, LogOptions, DataOptions, ReportOptions, FinetuneOptions, ScheduleTiming,
                   BalanceOptions, AttentionOptions, LatencyOptions, DepthOptions, RoundToOption,
                   StructuredOneShotOptions, UnstructuredOptions, TargetOptions, StartOptions):
    """``prunekit prune``: one options group per mode (``--help`` lists them from the last base to the first); a
    flag of a mode this run is not in is refused, never dropped (:data:`MODES`, :func:`prune_rules`)."""

    renamed: ClassVar[Dict[str, str]] = {"input_size": "image_size", "bn_recal_batches": "recal_batches"}

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, values: Any) -> Any:
        return refuse_old_names(cls, values)

    @model_validator(mode="after")
    def _one_mode(self) -> "PruneOptions":
        for rule in (*mode_rules(), *prune_rules()):
            problem = rule(self)
            if problem:
                raise ValueError(problem)
        return self

    def ratio_value(self) -> float:
        """``--ratio``, else 0 when depth pruning is asked (``--depth 0.3`` alone removes blocks, not channels),
        else 0.5."""
        return self.ratio if self.ratio is not None else 0.0 if self.wants_depth() else 0.5

    def mode(self) -> str:
        """The run's mode in words, for messages: e.g. ``structured one-shot``, ``unstructured gradual-schedule``."""
        when = "one-shot" if self.schedule == "oneshot" else f"{self.schedule}-schedule"
        return f"{'N:M' if self.nm and self.method == 'unstructured' else self.method} {when}"

    def wants_latency_target(self) -> bool:
        """``--reduce latency=...``: a measured latency target (the ``latency_target`` allocator)."""
        return bool(self.reduce) and self.reduce.strip().lower().startswith("latency")


def refuse_old_names(model: type, values: Any) -> Any:
    """A key or value renamed in this release, refused with a pointer to its new name (for one release)."""
    if not isinstance(values, dict):
        return values
    for old, new in getattr(model, "renamed", {}).items():
        if old in values:
            raise ValueError(f"{_flag(old)} was renamed {_flag(new)}")
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        new = extra.get("renamed_values", {}).get(values.get(name)) if isinstance(values.get(name), str) else None
        if new:
            raise ValueError(f"{_flag(name)} {values[name]} was renamed {_flag(name)} {new}")
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Which options group belongs to which mode: (group, is this run in the mode, how to get into it).
MODES = (
    (UnstructuredOptions, lambda o: o.method == "unstructured", "unstructured pruning", "drop --structured"),
    (RoundToOption, lambda o: o.method == "structured", "structured pruning", "add --structured"),
    (StructuredOneShotOptions, lambda o: o.method == "structured" and o.schedule == "oneshot",
     "structured one-shot pruning", "add --structured and drop --schedule"),
    (DepthOptions, lambda o: o.method == "structured" and o.schedule == "oneshot",
     "structured one-shot pruning", "add --structured and drop --schedule"),
    (LatencyOptions, lambda o: o.allocation in ("latency", "fastest") or o.wants_latency_target()
     or (o.method == "structured" and o.latency and o.latency_runtime == "cuda"), "latency timing",
     "add --allocation latency / fastest (or a --reduce latency=... target), or --latency-runtime cuda (the speed "
     "guard then times dense and pruned on the GPU; otherwise it reads the report's own CPU latencies)"),
    (AttentionOptions, lambda o: o.criterion == "attention", "--criterion attention", "add --criterion attention"),
    (BalanceOptions, lambda o: o.max_drop is not None, "the accuracy budget", "add --max-drop"),
    (ScheduleTiming, lambda o: o.schedule != "oneshot", "scheduled pruning", "add --schedule iterative (or "
                                                                            "another schedule)"),
)


def mode_rules() -> List[Callable[["PruneOptions"], Optional[str]]]:
    """One rule per options group: a value other than its default, set for a run not in the group's mode, is
    refused naming the flag, the mode it belongs to and the fix."""
    def rule_for(group: type, active: Callable[[Any], bool], mode: str, fix: str):
        own = [n for n in group.__dict__.get("__annotations__", {}) if n in group.model_fields and n != "schedule"]

        def rule(o: "PruneOptions") -> Optional[str]:
            if active(o):
                return None
            for name in own:
                value = getattr(o, name)
                if name in o.model_fields_set and value != group.model_fields[name].default:
                    shown = "" if isinstance(value, bool) else f" {value}"
                    return f"{_flag(name)}{shown} is for {mode}, not this {o.mode()} run: drop {_flag(name)}, or {fix}"
            return None
        return rule
    return [rule_for(*m) for m in MODES]


def prune_rules() -> List[Callable[["PruneOptions"], Optional[str]]]:
    """The cross-flag rules of ``prunekit prune`` that are not a mode's: each returns one line, or None."""
    return [_one_amount, _reduce_is_structured, _closest_needs_reduce, _latency_target_alone, _latency_allocation,
            _depth_allocations, _depth_blocks, _attention_budget, _max_drop_alone, _nm_one_shot, _distill_source,
            _deploy_needs_latency, _asked_to_train, _trained_already, _known_criterion]


def _one_amount(o: PruneOptions) -> Optional[str]:
    given = [f for f, v in (("--ratio", o.ratio), ("--reduce", o.reduce), ("--max-drop", o.max_drop),
                            ("--nm", o.nm)) if v is not None]
    if len(given) > 1:
        return f"give {' or '.join(given)}, not {'both' if len(given) == 2 else 'several'}: each sets how much " \
               "is removed"
    return None


def _reduce_is_structured(o: PruneOptions) -> Optional[str]:
    if o.reduce and o.method != "structured":
        return "--reduce shapes structured pruning (whole channels); with --unstructured give the fraction of " \
               "weights to remove as --ratio, or add --structured"
    return None


def _closest_needs_reduce(o: PruneOptions) -> Optional[str]:
    if o.closest and not o.reduce:
        return "--closest says what to do when a --reduce target cannot be reached: give --reduce, or drop --closest"
    return None


def _latency_target_alone(o: PruneOptions) -> Optional[str]:
    if o.wants_latency_target() and not (o.method == "structured" and o.schedule == "oneshot" and o.scope == "uniform"
                                         and o.criterion != "attention" and o.allocation == "uniform"
                                         and not o.wants_depth()):
        return f"--reduce {o.reduce} times candidate models and picks blocks and one channel ratio itself: use it " \
               "with --structured one-shot pruning (no --schedule), uniform scope, any criterion but attention, " \
               "without --allocation / --depth / --depth-blocks; or give a macs=... / params=... target"
    return None


def _latency_allocation(o: PruneOptions) -> Optional[str]:
    if o.allocation == "latency" and not (o.reduce and o.scope == "uniform" and o.criterion != "attention"):
        return "--allocation latency works with --structured one-shot pruning to a --reduce target (e.g. --reduce " \
               "macs=0.5), uniform scope, any criterion but attention"
    return None


def _depth_allocations(o: PruneOptions) -> Optional[str]:
    if o.allocation == "depth" and not (o.reduce and not o.wants_depth()):
        return "--allocation depth removes the fewest whole blocks that reach a target: give --structured and " \
               "--reduce (e.g. --reduce macs=0.3), without --depth / --depth-blocks"
    if o.allocation == "fastest" and not (o.reduce and not o.wants_depth() and o.scope == "uniform"
                                          and o.criterion != "attention"):
        return "--allocation fastest times splits of a --reduce target between whole blocks and channels: give " \
               "--structured one-shot pruning, --reduce (e.g. macs=4x), uniform scope, any criterion but " \
               "attention, without --depth / --depth-blocks"
    return None


def _depth_blocks(o: PruneOptions) -> Optional[str]:
    if o.wants_depth() and (o.criterion == "attention" or o.max_drop is not None):
        return "--depth / --depth-blocks remove whole residual blocks in --structured one-shot pruning (any " \
               "channel criterion but attention, no --max-drop)"
    return None


def _attention_budget(o: PruneOptions) -> Optional[str]:
    if o.attention_budget and not (o.scope == "uniform" and o.schedule == "oneshot" and o.attention_sparsity > 0):
        return "--attention-budget aims the gate penalty of --structured one-shot --criterion attention, uniform " \
               "scope: give --attention-sparsity > 0 (e.g. 3e-2) and drop --global / --schedule"
    return None


def _max_drop_alone(o: PruneOptions) -> Optional[str]:
    if o.max_drop is not None and not (o.scope == "uniform" and o.allocation == "uniform"):
        return "--max-drop chooses per-layer ratios for --structured one-shot pruning, uniform scope: drop " \
               "--global / --allocation (it replaces them)"
    return None


def _nm_one_shot(o: PruneOptions) -> Optional[str]:
    if o.nm and o.schedule != "oneshot":
        return "--nm prunes in one shot; use it without --schedule"
    return None


def _distill_source(o: PruneOptions) -> Optional[str]:
    if o.distill and o.schedule != "oneshot" and not o.starts_trained():
        return "--distill learns from the model before pruning, but this schedule trains from scratch; give a " \
               "trained --model (a checkpoint) or drop --distill"
    return None


def _deploy_needs_latency(o: PruneOptions) -> Optional[str]:
    if o.deploy != "eager" and not o.latency:
        return f"--deploy {o.deploy} sets the form latency is timed in; drop --no-latency (or --deploy)"
    return None


def _asked_to_train(o: PruneOptions) -> Optional[str]:
    if o.epochs is None and not o.starts_trained() and not Path(o.model).exists():  # a folder: the job says so
        return f"--model {o.model} is a name without weights: give --weights FILE or a trained checkpoint, or ask " \
               f"for training here with --epochs N (e.g. --epochs 30; --epochs 0 prunes the random init)"
    return None


def _trained_already(o: PruneOptions) -> Optional[str]:
    if o.epochs is not None and o.starts_trained():
        given = "--weights" if o.weights is not None else f"--model {o.model} (a checkpoint)"
        return f"--epochs trains a model name from scratch, but {given} starts from a trained model: drop --epochs " \
               "(fine-tuning after the cut is --finetune-epochs)"
    return None


def _known_criterion(o: PruneOptions) -> Optional[str]:
    if not o.nm:
        check_criterion(o.method, o.criterion)  # ConfigError (a ValueError) lists the known ones
    return None


class SensitivityOptions(RunOptions, DataOptions, BalanceOptions, RoundToOption):
    checkpoint: str = Field(..., description="trained prunekit checkpoint", json_schema_extra={"positional": True})
    criterion: str = Field("l1", description="which channels of a layer go first (any structured criterion "
                                             "but attention; l1 like prune's default)")
    max_drop: Optional[float] = Field(None, ge=0, description="also search the per-layer ratios that remove the "
                                                              "most MACs while the score drops at most this many "
                                                              "accuracy points")


class CompareOptions(RunOptions, LogOptions, DataOptions):
    model: str = Field("vgg_small", description="vgg_small, resnet_small, torchvision/<arch>, timm/<arch> (trained "
                                                "from scratch for --base-epochs), or a trained prunekit checkpoint "
                                                "(.safetensors: the base of every seed, with its own data split)")
    criteria: List[str] = Field(["attention_scale", "attention", "l1", "fpgm", "bn_scale", "random"],
                                description="criteria to compare (attention forms: attention = mean SE gate, "
                                            "attention_scale = gate x |BN gamma|, attention_gm, attention_scale_gm, "
                                            "attention_budget = gate penalty on the channels the plan removes)")
    reduce: List[str] = Field(["macs=0.5"], description="targets, e.g. macs=0.3 macs=2x macs=0.7 params=0.4")
    seeds: List[int] = Field([0, 1, 2], description="pruning and fine-tuning seeds (one cell per criterion, target "
                                                    "and seed)")
    scope: Literal["uniform", "global"] = Field("uniform", description="uniform: the same channel count per layer "
                                                                       "for every criterion; global: each "
                                                                       "criterion's scores set the counts")
    base_epochs: int = Field(30, ge=1, description="epochs training the unpruned base model from scratch")
    base_seed: Optional[int] = Field(0, ge=0, description="prune every seed from the base of this seed (seeds then "
                                                          "vary pruning and fine-tuning only); none: one base per "
                                                          "seed", json_schema_extra={"flag": "--base-seed"})
    finetune_epochs: int = Field(20, ge=0, description="fine-tuning epochs after pruning; the unpruned reference is "
                                                       "fine-tuned as long (same total budget)")
    finetune_lr: float = Field(0.01, gt=0, description="peak lr of the cosine fine-tuning")
    distill: bool = Field(False, description="fine-tune with knowledge distillation from the unpruned base")
    attention_epochs: int = Field(2, ge=0, description="epochs training the SE modules of the attention forms")
    attention_sparsity: float = Field(1e-3, ge=0, description="L1 penalty on the attention gates")
    attention_lr: float = Field(0.5, gt=0, description="lr of the SE modules (backbone frozen)")
    attention_removal: Literal["fold", "drop"] = Field("fold", description="fold the mean attention into the "
                                                                          "layer, or drop it")
    attention_mode: Literal["frozen", "joint"] = Field("frozen", description="train attention alone or with the "
                                                                            "backbone")
    calib_batches: int = Field(4, ge=1, description="training batches that data-driven criteria score on")
    recal_batches: int = Field(8, ge=0, description="re-estimate BN statistics on this many training batches "
                                                    "after pruning (0: off)")
    batch_size: int = Field(64, ge=1)
    latency: bool = Field(True, description="measure batch-1 CPU latency of each pruned model")
    skip_unpruned: bool = Field(False, description="do not run the unpruned reference cells")
    tensorboard: Optional[bool] = Field(None, description="TensorBoard event files of each cell under "
                                                          "<out>/logs/<cell>/tb/ (beside its history.csv, always "
                                                          "written); not given: when the package is installed")
    name: Optional[str] = Field(None, description="<out>/<name>_results.md and <name>_tradeoff.png (default: "
                                                  "criteria)")

    renamed: ClassVar[Dict[str, str]] = {"bn_recal_batches": "recal_batches"}

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, values: Any) -> Any:
        return refuse_old_names(cls, values)


class DemoOptions(RunOptions, LogOptions):
    epochs: int = Field(15, ge=1, description="training epochs")
    finetune_epochs: int = Field(5, ge=0, description="fine-tuning epochs after pruning")
    ratio: float = Field(0.5, ge=0, lt=1, description="channel ratio removed")


class InputSizeOption(BaseModel):
    cli_group: ClassVar[str] = "model input"

    input_size: Optional[str] = Field(
        None, description="the input to measure / export at instead of the one the checkpoint records (its pruning "
                          "example, else its data's image size): per-sample sizes without the batch, dims joined by "
                          "'x', inputs by ',': 3x224x224, or 224 for a square image at the recorded channels, or 128 "
                          "for 128 token ids (dtypes stay the recorded ones)")

    _input_size_format = field_validator("input_size")(parsed_by(parse_input_size))


class InstanceOption(BaseModel):
    cli_group: ClassVar[str] = "model input"

    model: Optional[str] = Field(
        None, description="for a checkpoint saved from a model prunekit does not build by name (prunekit.save of a "
                          "plain torchvision/timm model): the architecture to load it into, e.g. torchvision/resnet50 "
                          "(built fresh, then given the saved pruned shapes)")


class InfoOptions(RunOptions, InputSizeOption, InstanceOption):
    checkpoint: str = Field(..., description="prunekit checkpoint", json_schema_extra={"positional": True})
    latency: bool = Field(False, description="also measure latency")


class SizeOptions(RunOptions):
    checkpoint: str = Field(..., description="prunekit checkpoint (plain or compressed)",
                            json_schema_extra={"positional": True})
    values: Literal["fp32", "fp16", "bf16", "int8", "kmeans4"] = Field(
        "fp32", description="value format to estimate for a plain checkpoint")


class ExportOptions(RunOptions, InputSizeOption, InstanceOption):
    checkpoint: str = Field(..., description="prunekit checkpoint", json_schema_extra={"positional": True})
    onnx: Path = Field(Path("model.onnx"), description="where to write the ONNX file", validate_default=True)
    opset: int = Field(17, ge=9, le=23, description="ONNX opset")

    @field_validator("onnx")
    @classmethod
    def _onnx_is_a_file(cls, v: Path) -> Path:
        check_writable(check_output_file(v, "--onnx"), "--onnx")
        return v
