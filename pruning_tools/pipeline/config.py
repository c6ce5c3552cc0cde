"""Configuration of ``pruning-tools prune``: YAML -> frozen, validated dataclasses.

Unknown keys are rejected with their dotted path (``rl.episodez``); wrong types and out-of-range
values raise :class:`ConfigError` naming the field and the file.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pruning_tools.search.strategies import METHOD_NAMES

METHODS = METHOD_NAMES  # uniform, importance, random, global, full (pruning_tools/search/strategies.py)
#: a level is a fraction of parameters removed, of conv FLOPs removed, or a speed-up of the latency model
TARGET_METRICS = ("params", "flops", "latency")


class ConfigError(ValueError):
    """Invalid configuration; the message names the file and the key."""


@dataclass(frozen=True)
class DataConfig:
    """:param dataset: YOLO dataset root (``kitti convert`` output); ``None``: generate scenes into the run dir.
    :param generate_frames: frames to generate when ``dataset`` is ``None``.
    :param generate_seed: generator seed.
    :param imgsz: network input (H, W).
    :param train_images: cap on training images used for stage 1/3 (``None``: all).
    :param val_images: images of the held-out validation split used by the stage-2 reward.
    :param test_images: cap on test images for the final table (``None``: all).
    """

    dataset: str | None = None
    generate_frames: int = 240
    generate_seed: int = 0
    imgsz: tuple[int, int] = (384, 1248)
    train_images: int | None = None
    val_images: int = 24
    test_images: int | None = None

    def __post_init__(self) -> None:
        if len(self.imgsz) != 2 or any(int(v) % 32 or int(v) <= 0 for v in self.imgsz):
            raise ValueError(f"data.imgsz must be two positive multiples of 32, got {self.imgsz}")
        if self.generate_frames < 10:
            raise ValueError(f"data.generate_frames must be >= 10, got {self.generate_frames}")
        if self.val_images < 1:
            raise ValueError(f"data.val_images must be >= 1, got {self.val_images}")


@dataclass(frozen=True)
class ImportanceConfig:
    """:param batches: K training batches whose gradient L1 norms are accumulated.
    :param batch: images per batch.
    :param beta: skew of budgets by importance (0: uniform).
    :param channel_choice: which channels the stage-1 methods (``importance``, ``full``) remove inside
        a layer: ``magnitude`` (group L2, as every other method) or ``gradient`` (stage-1 per-channel
        summed |grad|, lowest first).
    """

    batches: int = 8
    batch: int = 4
    beta: float = 0.5
    channel_choice: str = "magnitude"

    def __post_init__(self) -> None:
        if self.batches < 1 or self.batch < 1:
            raise ValueError("importance.batches and importance.batch must be >= 1")
        if self.channel_choice not in ("magnitude", "gradient"):
            raise ValueError(f"importance.channel_choice must be 'magnitude' or 'gradient', got {self.channel_choice!r}")
        if self.beta < 0:
            raise ValueError(f"importance.beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class RLConfig:
    """Stage 2 (see :mod:`pruning_tools.search.env`, :mod:`pruning_tools.search.agent`).

    ``rerank_top``: the best episodes by proxy reward (plus the stage-1 prior) are re-scored with a
    more careful proxy (``rerank_ft_steps`` fine-tune batches, ``rerank_val_images`` val images,
    ``None``: the whole val split) and the best of those is kept (0: keep the best episode). The same
    re-ranking serves ``random``. ``lambda_flops``: reward weight of the conv FLOPs removed (points);
    ``workers``: processes on this machine evaluating the rewards of a batch in parallel (the episodes
    of one PPO rollout, the warm-up episodes, random search's vectors; one torch thread each; 1: in this
    process; with ``--ray`` Ray's workers do it); ``proxy_imgsz``: input size of the reward
    proxy's BN recalibration, fine-tuning and val evaluation (``None``: ``data.imgsz``);
    ``proxy_surgery``: ``mask`` (zero the channels, one graph trace in all) or ``physical``;
    ``proxy_metric``: ``map50_95`` (mAP50-95 after ``bn_batches`` of BN recalibration, the seed's
    reward) or ``val_loss`` (detection loss of the val images as one batch with batch-statistics BN:
    score ``L_dense / L``; ``bn_batches`` unused) — see docs/pruning.md for why and the measured ranking.
    ``budget``: how an episode meets its level — ``clip`` (each action clipped so the level stays
    reachable: the last layers absorb the rest) or ``spread`` (actions as chosen, one common rescaling
    of the whole vector at the end; :class:`pruning_tools.search.env.PruningEnv`).
    """

    episodes: int = 20
    warmup_episodes: int = 4
    warmup_noise: float = 0.08
    learning_rate: float = 3e-4
    episodes_per_update: int = 2
    n_epochs: int = 4
    gamma: float = 0.99
    lambda_map: float = 1.0
    lambda_sparsity: float = 10.0
    bn_batches: int = 4
    bn_batch: int = 4
    ft_steps: int = 0
    ft_lr: float = 0.002
    rerank_top: int = 3
    rerank_ft_steps: int = 8
    rerank_val_images: int | None = None
    lambda_flops: float = 0.0
    workers: int = 1
    log_std_init: float = -1.0
    imitation_steps: int = 200
    proxy_imgsz: tuple[int, int] | None = None
    proxy_surgery: str = "mask"
    proxy_metric: str = "map50_95"
    budget: str = "clip"

    def __post_init__(self) -> None:
        if self.budget not in ("clip", "spread"):
            raise ValueError(f"rl.budget must be 'clip' or 'spread', got {self.budget!r}")
        if self.proxy_metric not in ("map50_95", "val_loss"):
            raise ValueError(f"rl.proxy_metric must be 'map50_95' or 'val_loss', got {self.proxy_metric!r}")
        if self.proxy_surgery not in ("mask", "physical"):
            raise ValueError(f"rl.proxy_surgery must be 'mask' or 'physical', got {self.proxy_surgery!r}")
        if self.workers < 1:
            raise ValueError(f"rl.workers must be >= 1, got {self.workers}")
        if self.episodes % self.episodes_per_update:
            raise ValueError(f"rl.episodes ({self.episodes}) must be a multiple of rl.episodes_per_update "
                             f"({self.episodes_per_update}: the episodes of one PPO rollout), so that PPO and "
                             "random search get the same number of reward evaluations")
        if self.proxy_imgsz is not None and (len(self.proxy_imgsz) != 2
                                             or any(int(v) % 32 or int(v) <= 0 for v in self.proxy_imgsz)):
            raise ValueError(f"rl.proxy_imgsz must be two positive multiples of 32, got {self.proxy_imgsz}")
        if self.lambda_flops < 0:
            raise ValueError(f"rl.lambda_flops must be >= 0, got {self.lambda_flops}")
        if self.rerank_top < 0 or self.rerank_ft_steps < 0:
            raise ValueError("rl.rerank_top and rl.rerank_ft_steps must be >= 0")
        if self.episodes < 0 or self.warmup_episodes < 0:
            raise ValueError("rl.episodes and rl.warmup_episodes must be >= 0")
        if self.episodes + self.warmup_episodes < 1:
            raise ValueError("rl needs at least one episode (episodes + warmup_episodes >= 1)")
        if not self.learning_rate > 0:
            raise ValueError(f"rl.learning_rate must be > 0, got {self.learning_rate}")
        if self.bn_batches < 0 or self.ft_steps < 0:
            raise ValueError("rl.bn_batches and rl.ft_steps must be >= 0")


@dataclass(frozen=True)
class FinetuneSection:
    """Stage 3 (see :class:`pruning_tools.surgery.finetune.FinetuneConfig`).

    ``distill_weight``: weight of knowledge distillation from the dense model (its head outputs as soft
    targets beside the labels, :mod:`pruning_tools.train.distill`); 0 (default): off, the labels only.
    ``distill_temperature``: the softening temperature of those targets.
    """

    prune_steps: int = 2
    steps_per_prune: int = 10
    final_steps: int = 10
    batch: int = 4
    lr0: float = 0.002
    crop_width: int | None = 640
    checkpoint_every: int = 10
    bn_batches: int = 8
    distill_weight: float = 0.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.distill_weight < 0:
            raise ValueError(f"finetune.distill_weight must be >= 0 (0: no distillation), got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise ValueError(f"finetune.distill_temperature must be > 0, got {self.distill_temperature}")
        if self.distill_weight > 0 and self.steps_per_prune + self.final_steps == 0:
            raise ValueError("finetune.distill_weight > 0 needs fine-tune batches (steps_per_prune or final_steps > 0)")
        if self.bn_batches < 0:
            raise ValueError(f"finetune.bn_batches must be >= 0, got {self.bn_batches}")
        if self.prune_steps < 1:
            raise ValueError(f"finetune.prune_steps must be >= 1, got {self.prune_steps}")
        if self.steps_per_prune < 0 or self.final_steps < 0 or self.batch < 1:
            raise ValueError("finetune.steps_per_prune/final_steps must be >= 0 and batch >= 1")
        if not self.lr0 > 0:
            raise ValueError(f"finetune.lr0 must be > 0, got {self.lr0}")


@dataclass(frozen=True)
class LatencyConfig:
    """ONNX Runtime CPU latency settings, and the latency model of ``target_metric: latency``
    (:mod:`pruning_tools.quant.latency`).

    :param precision: precision the latency model is measured at and speed-ups are checked at
        (``fp32`` | ``int8``): a speed-up is the dense model's latency over the pruned one's, both at it.
    :param grid: latency-table points per channel axis of each conv (bilinear in between).
    :param calibrate_models: random pruned networks (besides dense and two uniform ones) the model's
        offset and scale are fitted on.
    :param cache_dir: where the per-machine tables are cached (``None``: ``~/.cache/sparse_perception/latency``).
    :param miss_tolerance: a pruned model whose measured speed-up is more than this fraction below its
        level's is reported as missing it (never relabelled).
    """

    threads: int = 2
    warmup: int = 2
    runs: int = 5
    precision: str = "fp32"
    grid: int = 5
    calibrate_models: int = 3
    cache_dir: str | None = None
    miss_tolerance: float = 0.10

    def __post_init__(self) -> None:
        if self.threads < 1 or self.runs < 1 or self.warmup < 0:
            raise ValueError("latency.threads and latency.runs must be >= 1, warmup >= 0")
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"latency.precision must be 'fp32' or 'int8', got {self.precision!r}")
        if self.grid < 2:
            raise ValueError(f"latency.grid must be >= 2, got {self.grid}")
        if self.calibrate_models < 0:
            raise ValueError(f"latency.calibrate_models must be >= 0, got {self.calibrate_models}")
        if not 0.0 <= self.miss_tolerance < 1.0:
            raise ValueError(f"latency.miss_tolerance must be in [0, 1), got {self.miss_tolerance}")


@dataclass(frozen=True)
class ResolutionConfig:
    """The resolution baseline (:mod:`pruning_tools.pipeline.resolution`): the dense model at smaller
    inputs, timed in the same round-robin as every pruned model and evaluated on the same frames.

    :param enabled: measure it (``false``: no resolution rows in the table and the plot).
    :param sizes: input sizes ``(H, W)``, multiples of 32, each smaller than ``data.imgsz``; ``None``:
        :func:`pruning_tools.pipeline.resolution.default_ladder` of ``data.imgsz`` (for 384x1248:
        352x1152, 320x1024, 288x928, 256x832, 224x736, 192x640).
    """

    enabled: bool = True
    sizes: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.sizes is None:
            return
        if not self.sizes:
            raise ValueError("resolution.sizes must list at least one size (or set resolution.enabled: false)")
        for hw in self.sizes:
            if len(hw) != 2 or any(int(v) % 32 or int(v) <= 0 for v in hw):
                raise ValueError(f"resolution.sizes: every size must be two positive multiples of 32, got {list(hw)}")
        if len({tuple(hw) for hw in self.sizes}) != len(self.sizes):
            raise ValueError(f"resolution.sizes: a size is listed twice in {[list(hw) for hw in self.sizes]}")

    def check(self, imgsz: tuple[int, int]) -> None:
        """:raises ValueError: a size not smaller than the deployment input ``imgsz``."""
        for hw in self.sizes or ():
            if hw[0] > imgsz[0] or hw[1] > imgsz[1] or tuple(hw) == tuple(imgsz):
                raise ValueError(f"resolution.sizes: {hw[0]}x{hw[1]} is not smaller than data.imgsz "
                                 f"{imgsz[0]}x{imgsz[1]} (the dense model at data.imgsz is the baseline's top point)")


@dataclass(frozen=True)
class PruneConfig:
    """Top level of a ``prune`` configuration file."""

    name: str = "quick"
    baseline: str | None = None
    run_dir: str | None = None
    #: target sparsities in (0, 1); with ``target_metric: latency`` speed-ups over dense (1.5, 2, 3)
    levels: tuple[float, ...] = (0.5, 0.75, 0.9)
    methods: tuple[str, ...] = METHODS
    trials: int = 1
    seed: int = 0
    max_ratio: float = 0.9
    round_to: int = 8
    target_metric: str = "params"
    threads: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)

    def __post_init__(self) -> None:
        self.resolution.check(self.data.imgsz)
        if not self.levels:
            raise ValueError("levels must list at least one target sparsity")
        if self.target_metric not in TARGET_METRICS:
            raise ValueError(f"target_metric must be one of {', '.join(TARGET_METRICS)}, got {self.target_metric!r}")
        for lv in self.levels:
            if self.target_metric == "latency":
                if not 1.0 < float(lv) <= 20.0:
                    raise ValueError(f"levels: with target_metric latency a level is a speed-up over the dense model "
                                     f"(e.g. 1.5, 2, 3), > 1 and <= 20, got {lv}")
            elif not 0.0 < float(lv) < 1.0:
                raise ValueError(f"levels: target sparsity must be strictly between 0 and 1, got {lv}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"levels: each level once, got {list(self.levels)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods: unknown {bad}; choose from {list(METHODS)}")
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if not 0.0 < self.max_ratio < 1.0:
            raise ValueError(f"max_ratio must be in (0, 1), got {self.max_ratio}")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")

    @property
    def targets(self) -> tuple[float, ...]:
        """The levels as the fractions the search targets: parameter (or FLOPs) sparsity as given, or for
        ``target_metric: latency`` the fraction of the dense latency removed, ``1 - 1/speed-up``."""
        if self.target_metric == "latency":
            return tuple(1.0 - 1.0 / float(x) for x in self.levels)
        return tuple(float(v) for v in self.levels)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'top level'}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        elem = args[0]
        return tuple(_convert(elem, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: Any, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in names]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"unknown key '{where}' (allowed in {prefix or 'top level'}: {sorted(names)})")
    kwargs = {k: _convert(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def config_from_dict(raw: dict[str, Any]) -> PruneConfig:
    """Build a :class:`PruneConfig` from a plain dict.

    :raises ConfigError: unknown key, wrong type or invalid value (message names the key).
    """
    return _build(PruneConfig, raw or {})


def load_config(path: str | Path) -> PruneConfig:
    """Load and validate a YAML configuration file.

    :raises ConfigError: naming the file and the offending key; an empty file (or ``{}``) is refused.
    :raises FileNotFoundError: when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    from sparse_perception.runtime.zoo import capped, safe_load_yaml

    try:
        raw = safe_load_yaml(path.read_text())  # aliases refused: nested ones expand to gigabytes
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {capped(str(exc), 500)}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if not raw:  # an empty file would silently start the full default run (hours)
        raise ConfigError(f"{path}: the config file is empty (no settings); write the keys to use, e.g. "
                          "start from pruning_tools/configs/quick.yaml (minutes) or full.yaml (hours)")
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {capped(str(exc), 2000)}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """:return: JSON/YAML-ready dict of a config."""
    out = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return fix(out)
