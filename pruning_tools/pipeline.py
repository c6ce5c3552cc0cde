"""``pruning-tools prune --config FILE``: the three-stage pruning pipeline and its comparison table.

For every target level (parameter sparsity, default 50/75/90 %) and trial, each method of
:mod:`pruning_tools.methods` (``uniform``, ``importance`` — the seed's "no RL", ``random``,
``global``, ``full`` — the seed's "RL") turns the dense model into per-layer ratios meeting the level
(within 1 %, else an error), and every one gets the same stage-3 pruning + fine-tuning. One
(method, level, trial) unit is :meth:`Pipeline.run_unit`; selection (search, re-ranking) uses the
val split only, the test split is only reported. Latencies are measured at the end, every model
round-robin in one process.

Run-directory layout (consumed by ``pruning-tools export``)::

    <run>/config.yaml            the resolved configuration
    <run>/summary.json           checkpoints: method, level, achieved sparsity, mAP, path
    <run>/results.json           every measurement + aggregates (mean, std over trials)
    <run>/table.md               Table-1-style markdown
    <run>/pareto.png             mAP50-95 vs ONNX Runtime latency
    <run>/layer_sparsity.png     per-layer ratios per method and level
    <run>/dense.json             dense baseline measurements
    <run>/importance_t<k>.json   stage-1 layer importance, channel scores and budgets (trial k)
    <run>/dense.onnx             the dense model's ONNX file (interleaved latency)
    <run>/tb/                    TensorBoard logs of the PPO runs
    <run>/<method>/s<NN>/model.pt        pruned + fine-tuned FP32 checkpoint (trial 0)
    <run>/<method>/s<NN>/result.json     its measurements (and ratios)
    <run>/<method>/s<NN>/model.onnx      its ONNX file (interleaved latency)
    <run>/<method>/s<NN>/t<k>/...        the same for trial k >= 1
    <run>/{full,random}/s<NN>/search.json  search history (trial 0; t<k>/ for others)

Re-running the same command resumes: finished results are kept, an interrupted stage-3 job
continues from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pruning_tools.comparison import METHOD_LABELS, PAIRS, aggregate_row, comparison_table, paired_differences, paired_lines
from pruning_tools.prune_config import ConfigError, PruneConfig, config_to_dict, load_config

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_BASELINE = ASSETS / "baseline_yolov5n.pt"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


#: a method whose ratios or pruned model miss the level by more than this (absolute sparsity) is an error
LEVEL_TOLERANCE = 0.01


class _ValMap:
    """Picklable ``model -> mAP50-95`` on the val split."""

    def __init__(self, data: Path, imgsz: tuple[int, int], max_images: int | None) -> None:
        self.data, self.imgsz, self.max_images = Path(data), tuple(imgsz), max_images

    def __call__(self, model: torch.nn.Module) -> float:
        from pruning_tools.measure import evaluate_model

        return float(evaluate_model(model, self.data, "val", self.imgsz, max_images=self.max_images)["map50_95"])


class _ValLoss:
    """Picklable ``model -> score`` from the detection loss on the first ``max_images`` val images.

    The images form one batch and the model runs in train mode (no gradients): every BatchNorm layer
    normalises with this batch's own statistics, which is a BN recalibration on these images in the
    same forward pass. The score is ``L_dense / L`` (1.0 for the dense model, towards 0 as the loss
    grows), so the reward's dmAP term becomes ``(score - 1) x 100`` "points" of relative loss.
    Unlike mAP after BN recalibration — which reads ~0 for most candidates at 75 % and ties them —
    the loss is continuous: bench/proxy_correlation.py measures how both rank candidates like stage 3.
    """

    def __init__(self, data: Path, imgsz: tuple[int, int], max_images: int | None) -> None:
        self.data, self.imgsz, self.max_images = Path(data), tuple(imgsz), max_images
        self.reference: float | None = None
        self._batch: dict[str, torch.Tensor] | None = None

    def loss(self, model: torch.nn.Module) -> float:
        from pruning_tools.training import YoloDataset, collate
        from pruning_tools.ultralytics_adapter import detection_loss

        if self._batch is None:
            ds = YoloDataset(self.data, "val", self.imgsz)
            n = len(ds) if self.max_images is None else min(self.max_images, len(ds))
            self._batch = collate([ds.load(i) for i in range(n)])
        was = model.training
        # a train-mode forward updates the BN running statistics: the scored model keeps its own
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        model.train()
        try:
            with torch.no_grad():
                return float(detection_loss(model, self._batch)[0])
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
            model.train(was)

    def set_reference(self, dense: torch.nn.Module) -> "_ValLoss":
        """Measure the dense model's loss (the model is left as it was)."""
        self.reference = self.loss(dense)
        return self

    def __call__(self, model: torch.nn.Module) -> float:
        if self.reference is None:
            raise RuntimeError("_ValLoss needs set_reference(dense) before scoring")
        return self.reference / max(self.loss(model), 1e-9)


def level_dir(run: Path, method: str, level: float, trial: int) -> Path:
    """``<run>/<method>/s<NN>`` (trial 0) or ``.../t<k>``."""
    d = run / method / f"s{int(round(level * 100)):02d}"
    return d if trial == 0 else d / f"t{trial}"


def next_run_dir(base: Path, name: str) -> Path:
    """``<base>/<name>_<n>`` with the next free ``n``."""
    n = 1
    while (base / f"{name}_{n}").exists():
        n += 1
    return base / f"{name}_{n}"


@dataclass
class Inputs:
    """What every unit of work reads: the dataset root, the dense model, its pruning space, the
    training split, (once measured) the dense model's proxy score on the stage-2 val images and
    (once built) the training split at the proxy input size."""

    data: Path
    dense: torch.nn.Module
    space: Any
    train_ds: Any
    dense_val: float | None = None
    proxy_ds: Any = None


@dataclass(frozen=True)
class ProxySpec:
    """A stage-2 reward proxy: calibration seed, BN batches, fine-tune batches and lr, val images and
    the per-channel scores choosing the removed channels (``((layer, scores), ...)``; ``None``: L2
    magnitude). Hashable: workers keep one proxy per spec."""

    seed: int
    bn_batches: int
    ft_steps: int
    ft_lr: float
    val_images: int | None
    channel_scores: tuple[tuple[str, tuple[float, ...]], ...] | None = None


class Pipeline:
    """Runs the comparison described in the module docstring.

    :param cfg: validated configuration.
    :param run_dir: output folder (created; re-use resumes).
    :param progress: show progress bars.
    :param executor: runs the (method, level, trial) units and reward-evaluation batches elsewhere
        (:class:`pruning_tools.distributed.RayExecutor`); ``None``: everything in this process.
    :param real_eval: a real KITTI object root: every measurement also gets real-frame AP
        (:func:`pruning_tools.evaluate.real_eval_frames`: the baseline's real train/val frames left out,
        or ``real_split`` of ``real_split_file``). Units run elsewhere get it on the driver afterwards.
    :param mix: further YOLO datasets ``(root, repeats)`` whose train splits join every training batch
        stream (stage 1, stage-2 calibration, stage-3 fine-tuning), e.g. the real frames the baseline
        was trained on, so pruned models keep what the baseline learnt from them (not with an executor).
    """

    def __init__(self, cfg: PruneConfig, run_dir: Path, progress: bool = True, executor: Any = None,
                 real_eval: Path | None = None, real_split_file: Path | None = None, real_split: str = "test",
                 mix: list[tuple[Path, int]] | None = None) -> None:
        self.cfg, self.run, self.progress, self.executor = cfg, Path(run_dir), progress, executor
        self.mix = [(Path(d), int(r)) for d, r in (mix or [])]
        if self.mix and executor is not None:
            raise ValueError("--mix is not supported with --ray yet (workers read only the packed dataset)")
        self.run.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.real_eval, self.real_split_file, self.real_split = real_eval, real_split_file, real_split
        self._real: Any = None
        self._inputs: Inputs | None = None
        self._stage1: dict[int, dict[str, Any] | None] = {}
        self.pool: Any = None  # local reward-evaluation workers (rl.workers > 1), during run_all

    def log(self, msg: str) -> None:
        print(f"[prune {time.monotonic() - self.t0:7.1f}s] {msg}", flush=True)

    # ------------------------------------------------------------------ inputs
    def dataset(self) -> Path:
        """The YOLO dataset: configured, or generated scenes converted into ``<run>/data``."""
        from pruning_tools.training import resolve_split_dir

        c = self.cfg.data
        if c.dataset:
            root = Path(c.dataset)
        else:
            root = self.run / "data" / "yolo"
            if not (root / "data.yaml").is_file():
                try:
                    from pruning_tools.kitti import convert_kitti, generate_dataset
                except ImportError as exc:
                    raise ConfigError(f"data.dataset not set and the scene generator is unavailable ({exc})") from exc
                self.log(f"generating {c.generate_frames} scenes (seed {c.generate_seed})")
                raw = self.run / "data" / "kitti"
                generate_dataset(raw, frames=c.generate_frames, seed=c.generate_seed, progress=self.progress)
                convert_kitti(raw, root, progress=self.progress)
        for split in ("train", "val", "test"):
            resolve_split_dir(root, split)  # clear error on missing / empty splits
        return root

    def baseline(self) -> torch.nn.Module:
        from pruning_tools.ultralytics_adapter import load_checkpoint

        path = Path(self.cfg.baseline) if self.cfg.baseline else DEFAULT_BASELINE
        model, _ = load_checkpoint(path)
        self.baseline_path = path.resolve()
        return model

    # ------------------------------------------------------------------ measurements
    def measure(self, model: torch.nn.Module, data: Path, onnx_path: Path | None = None) -> dict[str, Any]:
        from pruning_tools.measure import count_flops, evaluate_model, model_latency

        c = self.cfg
        m = evaluate_model(model, data, "test", c.data.imgsz, max_images=c.data.test_images, progress=self.progress)
        self.evaluator = m.get("evaluator", "?")
        gflops, params = count_flops(model, c.data.imgsz)
        # one timed run here (the ONNX file and its size); Table 1's latencies come from the interleaved
        # round-robin of every model in report()
        lat = model_latency(model, c.data.imgsz, c.latency.threads, 1, 1, keep=onnx_path)
        out = {"map50_95": float(m["map50_95"]), "map50": float(m["map50"]), "evaluator": self.evaluator,
               "latency_ms": lat["median_ms"],
               "latency": lat, "gflops": round(gflops, 4), "params": params,
               "size_mb": round(lat["onnx_bytes"] / 1e6, 3)}
        real = self.measure_real(model)
        if real is not None:
            out["real"] = real
        return out

    def measure_real(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Real-frame AP of ``model`` (``None`` without ``real_eval``)."""
        if self.real_eval is None:
            return None
        from pruning_tools.evaluate import real_eval_frames, real_summary, torch_detector
        from pruning_tools.ultralytics_adapter import class_names

        if self._real is None:
            self._real = real_eval_frames(self.real_eval, getattr(self, "baseline_path", None), self.real_split_file,
                                          self.real_split, self.progress)
            self.log(f"real-frame evaluation on {self._real.description}")
        res = self._real.evaluate(torch_detector(model, class_names(model), self.cfg.data.imgsz))
        return real_summary(res)

    def _add_missing_real(self, rec: dict[str, Any], path: Path) -> dict[str, Any]:
        """A result without real-frame AP (an earlier run without ``real_eval``, or a unit run elsewhere):
        measure its checkpoint on the real frames here."""
        if self.real_eval is None or "real" in rec:
            return rec
        from pruning_tools.ultralytics_adapter import load_checkpoint

        model = self.baseline() if rec.get("method") == "dense" else load_checkpoint(self.run / rec["checkpoint"])[0]
        rec = {**rec, "real": self.measure_real(model)}
        _write_json(path, rec)
        return rec

    # ------------------------------------------------------------------ shared inputs
    def prepare(self) -> Inputs:
        """Dataset, dense model (eval mode), pruning space and training split (no measurement).

        Idempotent: a second call returns the same :class:`Inputs`.
        """
        if self._inputs is not None:
            return self._inputs
        from pruning_tools.pruning import PruningSpace, check_target

        c = self.cfg
        for lv in c.levels:
            check_target(lv, "level")
        torch.set_num_threads(c.threads)
        data = self.dataset()
        dense = self.baseline()
        dense.eval()
        space = PruningSpace(dense, c.data.imgsz, c.round_to, c.target_metric)
        for lv in c.levels:
            if space.max_sparsity(c.max_ratio) < lv:
                raise ConfigError(f"level {lv} unreachable with max_ratio {c.max_ratio} "
                                  f"(at most {space.max_sparsity(c.max_ratio):.3f})")
        self._inputs = Inputs(data=data, dense=dense, space=space, train_ds=self.train_dataset(data, c.data.imgsz))
        return self._inputs

    def train_dataset(self, data: Path, imgsz: tuple[int, int]) -> Any:
        """The training split at ``imgsz`` (first ``data.train_images``), mixed with ``self.mix``."""
        from pruning_tools.training import YoloDataset

        c = self.cfg
        n = c.data.train_images
        ds = YoloDataset(data, "train", imgsz)
        if n is not None and n < len(ds):
            ds = YoloDataset(data, "train", imgsz, indices=list(range(n)))
        if self.mix:
            from pruning_tools.training import MixedDataset

            parts = [YoloDataset(d, "train", imgsz, cache=True) for d, _ in self.mix]
            self.log("training batches mix in " + ", ".join(f"{d} ({len(p)} frames x {r})"
                                                          for (d, r), p in zip(self.mix, parts)))
            ds = MixedDataset([ds, *parts], [1, *(r for _, r in self.mix)])
        return ds

    def needs_stage1(self) -> bool:
        from pruning_tools.methods import get_method

        return any(get_method(m).uses_importance for m in self.cfg.methods)

    def stage1(self, inputs: Inputs, trial: int) -> dict[str, Any] | None:
        """Stage 1 of ``trial``: ``{"budgets": {level: ratios}, "importance": per layer, "channel_scores":
        {layer: per-channel}}`` (``None`` when no method of the config uses it). Written to
        ``importance_t<k>.json`` and read back from it on a rerun. The dense model is not changed
        (its BatchNorm statistics are restored after the gradient passes)."""
        if not self.needs_stage1():
            return None
        if trial in self._stage1:
            return self._stage1[trial]
        from pruning_tools.importance import budgets_from_importance, compute_importance
        from pruning_tools.training import BatchStream

        c, space = self.cfg, inputs.space
        path = self.run / f"importance_t{trial}.json"
        st = None
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("batches") == c.importance.batches and saved.get("channel_scores") \
                    and saved.get("layers") == [l.name for l in space.layers]:
                st = {"importance": [float(v) for v in saved["importance"]],
                      "channel_scores": {k: torch.tensor(v) for k, v in saved["channel_scores"].items()}}
        if st is None:
            imp_stream = BatchStream(inputs.train_ds, c.importance.batch, c.seed + trial + 1000, c.finetune.crop_width)
            res = compute_importance(inputs.dense, space, imp_stream, c.importance.batches, self.progress)
            st = {"importance": [float(v) for v in res.layer_importance], "channel_scores": res.channel_scores}
        st["budgets"] = {lv: budgets_from_importance(space, st["importance"], lv, c.max_ratio, c.importance.beta)
                         for lv in c.levels}
        _write_json(path, {"batches": c.importance.batches, "layers": [l.name for l in space.layers],
                           "importance": st["importance"], "budgets": {str(lv): b for lv, b in st["budgets"].items()},
                           "channel_scores": {k: [float(x) for x in v] for k, v in st["channel_scores"].items()}})
        self._stage1[trial] = st
        return st

    def channel_scores(self, method: Any, stage1: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
        """Stage-1 per-channel scores where the config asks for them and ``method`` uses stage 1."""
        if stage1 and self.cfg.importance.channel_choice == "gradient" and getattr(method, "uses_importance", False):
            return stage1["channel_scores"]
        return None

    # ------------------------------------------------------------------ stage 2 parts
    def proxy_imgsz(self) -> tuple[int, int]:
        c = self.cfg
        sz = tuple(c.rl.proxy_imgsz) if c.rl.proxy_imgsz else tuple(c.data.imgsz)
        return int(sz[0]), int(sz[1])

    def proxy_train(self, inputs: Inputs) -> Any:
        """The training split at the proxy input size (BN recalibration and proxy fine-tuning)."""
        if inputs.proxy_ds is None:
            sz = self.proxy_imgsz()
            inputs.proxy_ds = inputs.train_ds if sz == tuple(self.cfg.data.imgsz) else self.train_dataset(inputs.data, sz)
        return inputs.proxy_ds

    def proxy_spec(self, trial: int, scores: dict[str, torch.Tensor] | None = None, rerank: bool = False) -> ProxySpec:
        """The search proxy (or, with ``rerank``, the re-ranking proxy) of ``trial``."""
        r = self.cfg.rl
        frozen = None if scores is None else tuple((k, tuple(float(x) for x in v)) for k, v in sorted(scores.items()))
        if rerank:
            return ProxySpec(self.cfg.seed + trial, r.bn_batches, r.rerank_ft_steps, r.ft_lr, r.rerank_val_images, frozen)
        return ProxySpec(self.cfg.seed + trial, r.bn_batches, r.ft_steps, r.ft_lr, self.cfg.data.val_images, frozen)

    def reward_proxy(self, inputs: Inputs, spec: ProxySpec, batched: bool = True) -> Any:
        """The stage-2 reward proxy described by ``spec`` (val split at the proxy input size, never the
        test split). With ``batched``, batches go to the executor (Ray) or the local worker pool."""
        from pruning_tools.rl_env import RewardProxy
        from pruning_tools.training import BatchStream

        c = self.cfg
        calib = BatchStream(self.proxy_train(inputs), c.rl.bn_batch, spec.seed + 2000, c.finetune.crop_width)
        scores = None if spec.channel_scores is None else {k: torch.tensor(v) for k, v in spec.channel_scores}
        batch = None
        if batched and self.executor is not None:
            batch = self.executor.batch_evaluator(spec)
        elif batched and self.pool is not None:
            batch = self.pool.batch_evaluator(spec)
        return RewardProxy(inputs.dense, inputs.space, calib, self.proxy_metric(inputs, spec.val_images),
                           spec.bn_batches if c.rl.proxy_metric == "map50_95" else 0, spec.ft_steps, spec.ft_lr,
                           scores, c.rl.proxy_surgery, batch_evaluate=batch)

    def proxy_metric(self, inputs: Inputs, val_images: int | None) -> Any:
        """``model -> score`` on the val split at the proxy input size: mAP50-95 after BN recalibration
        (``rl.proxy_metric: map50_95``) or :class:`_ValLoss` (``val_loss``)."""
        if self.cfg.rl.proxy_metric == "val_loss":
            return _ValLoss(inputs.data, self.proxy_imgsz(), val_images).set_reference(inputs.dense)
        return _ValMap(inputs.data, self.proxy_imgsz(), val_images)

    def dense_val(self, inputs: Inputs) -> float:
        """The dense model's proxy score on the proxy's val images (the reward's reference)."""
        if inputs.dense_val is None:
            metric = self.proxy_metric(inputs, self.cfg.data.val_images)
            inputs.dense_val = float(metric(inputs.dense))
            what = f"loss {metric.reference:.4f}, score" if isinstance(metric, _ValLoss) else "mAP50-95"
            self.log(f"dense {what} {inputs.dense_val:.4f} on {self.cfg.data.val_images or 'all'} val images at "
                     f"{self.proxy_imgsz()}")
        return inputs.dense_val

    def make_env(self, inputs: Inputs, level: float, trial: int, scores: dict[str, torch.Tensor] | None = None) -> Any:
        """The stage-2 environment of ``level`` / ``trial`` (its proxy removes channels by ``scores``)."""
        from pruning_tools.rl_env import PruningEnv

        c = self.cfg
        proxy = self.reward_proxy(inputs, self.proxy_spec(trial, scores))
        return PruningEnv(inputs.space, level, proxy, self.dense_val(inputs), c.rl.lambda_map, c.rl.lambda_sparsity,
                          c.max_ratio, c.rl.lambda_flops)

    def reward_evaluations(self) -> int:
        """Reward evaluations of one search: ``full``'s episodes (warm-up + PPO + final rollout);
        ``random`` gets the same number."""
        r = self.cfg.rl
        return r.warmup_episodes + r.episodes + (1 if r.episodes > 0 else 0)

    def ppo_search(self, ctx: Any, method: Any) -> Any:
        """Stage 2 for ``full``: warm-up from the stage-1 prior, PPO, val-split re-ranking."""
        from pruning_tools.agent import AgentConfig, search
        from pruning_tools.methods import MethodResult

        c, lv, trial = self.cfg, ctx.level, ctx.trial
        prior = ctx.stage1["budgets"][lv]
        scores = self.channel_scores(method, ctx.stage1)
        env = self.make_env(ctx.inputs, lv, trial, scores)
        acfg = AgentConfig(episodes=c.rl.episodes, warmup_episodes=c.rl.warmup_episodes,
                           warmup_noise=c.rl.warmup_noise, learning_rate=c.rl.learning_rate,
                           episodes_per_update=c.rl.episodes_per_update, n_epochs=c.rl.n_epochs,
                           gamma=c.rl.gamma, log_std_init=c.rl.log_std_init, imitation_steps=c.rl.imitation_steps,
                           seed=c.seed + trial)
        tag = f"s{int(round(lv * 100))}"
        sr = search(env, prior, acfg, self.run / "tb" / f"{tag}_t{trial}", self.progress, desc=f"stage 2: PPO {tag}")
        rerank = self.rerank(ctx.inputs, trial, sr.history, lv, scores)
        ratios = np.asarray(rerank[0]["ratios"] if rerank else on_level(sr.history, lv)[0]["ratios"])
        info = {"best_reward": sr.reward, "best_proxy_map": sr.map, "episodes": len(sr.history),
                "rerank": [{k: v for k, v in r.items() if k != "ratios"} for r in rerank],
                "proxy_evaluations": sr.proxy_evaluations, "wall_s": sr.wall_s,
                "dense_val_map": self.dense_val(ctx.inputs),
                "chosen_from": rerank[0]["candidate"] if rerank else "best episode"}
        return MethodResult(ratios, info, sr.history, scores)

    def rerank(self, inputs: Inputs, trial: int, history: list[dict[str, Any]], level: float,
               scores: dict[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """Re-score the ``rl.rerank_top`` best episodes of a search with a more careful proxy
        (``rl.rerank_ft_steps`` fine-tune batches, ``rl.rerank_val_images`` of the val split); best first.
        No candidate is added that the search did not find (the stage-1 prior competes only as an episode);
        episodes off the level by more than 1 % (channel rounding) are not candidates."""
        c = self.cfg.rl
        if c.rerank_top <= 0:
            return []
        cands: list[tuple[str, list[float]]] = []
        seen = set()
        for h in on_level(history, level):
            key = tuple(inputs.space.kept(i, r) for i, r in enumerate(h["ratios"]))
            if key in seen:
                continue
            seen.add(key)
            cands.append((f"episode {h['episode']} ({h['kind']})", h["ratios"]))
            if len(cands) >= c.rerank_top:
                break
        proxy = self.reward_proxy(inputs, self.proxy_spec(trial, scores, rerank=True))
        proxy.prefetch([r for _, r in cands])
        out = [{"candidate": name, "map": proxy(ratios), "ratios": ratios} for name, ratios in cands]
        out.sort(key=lambda r: -r["map"])
        self.log("rerank (val split): " + ", ".join(f"{r['candidate']}={r['map']:.4f}" for r in out))
        return out

    # ------------------------------------------------------------------ units
    def run_unit(self, inputs: Inputs, method: str, level: float, trial: int, stage1: dict[str, Any] | None,
                 dense_res: dict[str, Any]) -> dict[str, Any]:
        """One (method, level, trial) unit: ratios, stage 3, test-split measurements; writes its folder.

        A pure function of its arguments and the seed, so it gives the same result wherever it runs
        (an executor runs units in other processes). A finished unit's ``result.json`` is returned as is.

        :param stage1: the trial's :meth:`stage1` result (needed by the methods that use stage 1).
        :raises PruningError: when the method's ratios or the pruned model miss the level by more than 1 %.
        """
        from pruning_tools.finetune import FinetuneConfig, prune_and_finetune
        from pruning_tools.methods import UnitContext, get_method
        from pruning_tools.pruning import PruningError
        from pruning_tools.training import BatchStream
        from pruning_tools.ultralytics_adapter import save_checkpoint

        c, space = self.cfg, inputs.space
        m = get_method(method)
        if m.uses_importance and not stage1:
            raise ValueError(f"method {method!r} needs the trial's stage-1 result")
        if stage1:  # the layers' importance is part of the stage-2 observation
            for layer, imp in zip(space.layers, stage1["importance"]):
                layer.importance = float(imp)
        out = level_dir(self.run, method, level, trial)
        res_path = out / "result.json"
        tag = f"{method} s{int(round(level * 100))} t{trial}"
        if res_path.is_file():
            self.log(f"{tag}: done earlier (resume)")
            return json.loads(res_path.read_text())
        t_m = time.monotonic()
        seed = c.seed + trial
        torch.manual_seed(seed)
        result = m.ratios(UnitContext(self, inputs, level, trial, out, stage1))
        ratios = np.asarray(result.ratios, dtype=np.float64)
        achieved = float(space.sparsity(ratios))
        if abs(achieved - level) > LEVEL_TOLERANCE:
            raise PruningError(f"method {method!r} at level {level} (trial {trial}): its ratios reach "
                               f"{achieved:.4f}, more than {LEVEL_TOLERANCE:.0%} from the level")
        if result.history is not None:
            _write_json(out / "search.json", {**result.search, "history": result.history, "ratios": ratios})
        stream = BatchStream(inputs.train_ds, c.finetune.batch, seed, c.finetune.crop_width)
        fcfg = FinetuneConfig(prune_steps=c.finetune.prune_steps, steps_per_prune=c.finetune.steps_per_prune,
                              final_steps=c.finetune.final_steps, batch=c.finetune.batch,
                              lr0=c.finetune.lr0, checkpoint_every=c.finetune.checkpoint_every,
                              bn_batches=c.finetune.bn_batches, seed=seed)
        choice = "gradient" if result.channel_scores is not None else "magnitude"
        meta = {"kind": "pruned", "method": method, "level": level, "trial": trial, "seed": seed,
                "baseline": str(self.baseline_path.name), "ratios": [float(r) for r in ratios],
                "layers": [l.name for l in space.layers], "round_to": c.round_to, "channel_choice": choice}
        model, ft = prune_and_finetune(inputs.dense, space, ratios, stream, out, fcfg, meta, result.channel_scores,
                                       self.progress, desc=f"stage 3: {method} s{int(round(level * 100))}")
        meas = self.measure(model, inputs.data, out / "model.onnx")
        rec = {"method": method, "level": level, "trial": trial, "seed": seed,
               "sparsity": round(1 - meas["params"] / dense_res["params"], 4),
               "target_metric": c.target_metric, "achieved_target": round(achieved, 4),
               "flops_reduction": round(1 - meas["gflops"] / dense_res["gflops"], 4), **meas,
               "ratios": [float(r) for r in ratios], "channel_choice": choice, "finetune": ft,
               "search": result.search, "checkpoint": str((out / "model.pt").relative_to(self.run)),
               "onnx": str((out / "model.onnx").relative_to(self.run)),
               "wall_s": round(time.monotonic() - t_m, 1)}
        measured = rec["sparsity"] if c.target_metric == "params" else rec["flops_reduction"]
        if abs(measured - level) > LEVEL_TOLERANCE:
            raise PruningError(f"method {method!r} at level {level} (trial {trial}): the pruned model has "
                               f"{c.target_metric} sparsity {measured:.4f}, more than {LEVEL_TOLERANCE:.0%} from "
                               f"the level (checkpoint kept: {out / 'model.pt'})")
        # record results in the checkpoint's meta too (export reads either)
        save_checkpoint(model, out / "model.pt", {**meta, "ratios_key": _ratios_key(ratios),
                                                  "finetune": ft, "map50_95": meas["map50_95"],
                                                  "map50": meas["map50"], "sparsity": rec["sparsity"]})
        _write_json(res_path, rec)
        self.log(f"{tag}: mAP50-95 {meas['map50_95']:.4f} mAP50 {meas['map50']:.4f} sparsity {rec['sparsity']:.3f} "
                 f"({rec['wall_s']:.0f} s)")
        return rec

    def units(self) -> list[tuple[str, float, int]]:
        """Every (method, level, trial) of the config, in run order."""
        c = self.cfg
        return [(m, lv, t) for t in range(c.trials) for lv in c.levels for m in c.methods]

    def run_all(self) -> dict[str, Any]:
        c = self.cfg
        (self.run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(c), sort_keys=False))
        inputs = self.prepare()
        self.log(f"baseline {self.baseline_path} | {len(inputs.space)} prunable layers | data {inputs.data}")
        dense_path = self.run / "dense.json"
        if dense_path.is_file():
            dense_res = self._add_missing_real(json.loads(dense_path.read_text()), dense_path)
        else:
            self.log("measuring dense baseline (test mAP, ONNX Runtime latency)")
            dense_res = {"method": "dense", "level": 0.0, "sparsity": 0.0,
                         **self.measure(inputs.dense, inputs.data, self.run / "dense.onnx")}
            _write_json(dense_path, dense_res)
        units = self.units()
        done: dict[tuple[str, float, int], dict[str, Any]] = {}
        for u in units:
            res_path = level_dir(self.run, *u) / "result.json"
            if res_path.is_file():
                done[u] = json.loads(res_path.read_text())
                self.log(f"{u[0]} s{int(round(u[1] * 100))} t{u[2]}: done earlier (resume)")
        todo = [u for u in units if u not in done]
        stage1 = {t: self.stage1(inputs, t) for t in sorted({u[2] for u in todo})}
        if self.executor is not None and todo:
            done.update(self.executor.run_units(self, inputs, todo, stage1, dense_res))
        elif todo:
            workers = c.rl.workers if any(u[0] in ("full", "random") for u in todo) else 1
            if workers > 1:
                from pruning_tools.local_pool import LocalPool

                self.pool = LocalPool(self, inputs, workers)
            try:
                for k, u in enumerate(todo):
                    self.log(f"unit {k + 1}/{len(todo)}: {u[0]} s{int(round(u[1] * 100))} t{u[2]}")
                    done[u] = self.run_unit(inputs, *u, stage1[u[2]], dense_res)
            finally:
                if self.pool is not None:
                    self.pool.close()
                    self.pool = None
        # real-frame AP for results measured without it (earlier runs, units run on other nodes)
        done = {u: self._add_missing_real(r, level_dir(self.run, *u) / "result.json") for u, r in done.items()}
        return self.report(dense_res, [done[u] for u in units], inputs.space)

    # ------------------------------------------------------------------ outputs
    def interleave_latency(self, dense_res: dict[str, Any], records: list[dict[str, Any]]
                           ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """Every model of the table timed round-robin in this process (``latency.runs`` each, medians);
        returns copies of ``dense_res`` and ``records`` whose ``latency_ms`` are those medians."""
        from pruning_tools.measure import interleaved_latency
        from pruning_tools.ultralytics_adapter import class_names, export_onnx, load_checkpoint

        c = self.cfg
        paths: dict[str, Path] = {}
        dense_onnx = self.run / "dense.onnx"
        if not dense_onnx.is_file():
            dense = self.prepare().dense
            export_onnx(dense, dense_onnx, imgsz=c.data.imgsz, class_names=class_names(dense))
        paths["dense"] = dense_onnx
        for r in records:
            key = f"{r['method']}/{r['level']}/{r['trial']}"
            p = self.run / r.get("onnx", str(Path(r["checkpoint"]).with_suffix(".onnx")))
            if not p.is_file():
                model, _ = load_checkpoint(self.run / r["checkpoint"])
                export_onnx(model, p, imgsz=c.data.imgsz, class_names=class_names(model))
            paths[key] = p
        self.log(f"latency: {len(paths)} models round-robin, {c.latency.runs} timed runs each")
        lat = interleaved_latency(paths, c.data.imgsz, c.latency.threads, c.latency.warmup, c.latency.runs)
        dense_out = {**dense_res, "latency_ms": lat["dense"]["median_ms"], "latency": lat["dense"]}
        recs = []
        for r in records:
            k = f"{r['method']}/{r['level']}/{r['trial']}"
            recs.append({**r, "latency_unit_ms": r["latency_ms"], "latency_ms": lat[k]["median_ms"], "latency": lat[k]})
        info = {"method": "interleaved round-robin in one process", "models": len(paths), "runs": c.latency.runs,
                "warmup": c.latency.warmup, "threads": c.latency.threads}
        return dense_out, recs, info

    def report(self, dense_res: dict[str, Any], records: list[dict[str, Any]], space: Any) -> dict[str, Any]:
        c = self.cfg
        dense_res, records, lat_info = self.interleave_latency(dense_res, records)
        agg: list[dict[str, Any]] = []
        for lv in c.levels:
            for method in c.methods:
                rs = [r for r in records if r["method"] == method and abs(r["level"] - lv) < 1e-9]
                if not rs:
                    continue
                row: dict[str, Any] = {"method": method, "level": lv, "trials": len(rs)}
                for k in ("map50_95", "map50", "latency_ms", "gflops", "params", "size_mb", "sparsity"):
                    vals = np.array([float(r[k]) for r in rs])
                    row[k] = float(vals.mean())
                    row[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                if all(r.get("real") for r in rs):
                    row["real"] = _mean_real([r["real"] for r in rs])
                agg.append(row)
        pairs = [d for lv in c.levels for a, b in PAIRS if a in c.methods and b in c.methods
                 for d in [paired_differences(records, a, b, lv)] if d is not None]
        results = {"config": config_to_dict(c), "baseline": str(self.baseline_path),
                   "mix": [{"dataset": str(d), "repeats": r} for d, r in self.mix],
                   "evaluator": getattr(self, "evaluator", dense_res.get("evaluator")), "dense": dense_res,
                   "records": records, "aggregate": agg, "paired_differences": pairs, "latency": lat_info,
                   "selection_split": "val", "report_split": "test",
                   "layers": [l.name for l in space.layers],
                   "wall_s": round(time.monotonic() - self.t0, 1), "targets": self.targets(dense_res, agg, pairs)}
        _write_json(self.run / "results.json", results)
        (self.run / "table.md").write_text(self.table(dense_res, agg, pairs))
        summary = {"run_dir": str(self.run), "baseline": str(self.baseline_path), "imgsz": list(c.data.imgsz),
                   "dense": {"map50_95": dense_res["map50_95"], "map50": dense_res["map50"]},
                   "checkpoints": [{"method": r["method"], "level": r["level"], "trial": r["trial"],
                                    "sparsity": r["sparsity"], "map50_95": r["map50_95"], "map50": r["map50"],
                                    "latency_ms": r["latency_ms"], "path": r["checkpoint"]} for r in records]}
        _write_json(self.run / "summary.json", summary)
        try:
            self.plots(dense_res, records, space)
        except Exception as exc:  # noqa: BLE001 - plots must not lose the results
            self.log(f"plotting failed: {type(exc).__name__}: {exc}")
        self.log(f"wrote {self.run}/table.md, results.json, summary.json, pareto.png, layer_sparsity.png")
        return results

    def targets(self, dense_res: dict[str, Any], agg: list[dict[str, Any]],
                pairs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # issue 12: full - importance >= +1.0 points at 75 %, >= +2.0 at 90 % (mean over trials); full >= random
        for p in pairs or []:
            lv = int(round(p["level"] * 100))
            out[f"{p['a']}_minus_{p['b']}_at_{lv}_points"] = p["mean"]
            out[f"{p['a']}_minus_{p['b']}_at_{lv}_exceeds_trial_spread"] = p["exceeds_spread"]
            if p["b"] == "importance" and lv in (75, 90):
                need = 1.0 if lv == 75 else 2.0
                out[f"full_beats_importance_by_{need:g}_at_{lv}"] = p["mean"] >= need
            if p["b"] == "random":
                out[f"full_at_least_random_at_{lv}"] = p["mean"] >= 0.0
        full75, uni75, full50 = (aggregate_row(agg, m, lv) for m, lv in (("full", 0.75), ("uniform", 0.75),
                                                                         ("full", 0.5)))
        if full75 and uni75:
            gain = (full75["map50_95"] - uni75["map50_95"]) * 100
            out["full_minus_uniform_at_75_points"] = round(gain, 2)
            out["full_beats_uniform_by_7_at_75"] = gain >= 7.0
        if full50 and dense_res["map50_95"] > 0:
            keep = full50["map50_95"] / dense_res["map50_95"]
            out["full_keeps_fraction_of_dense_at_50"] = round(keep, 4)
            out["full_keeps_98pct_at_50"] = keep >= 0.98
        # real frames (issue targets: full keeps >= 95 % of the dense Car AP at 50 %, >= 85 % at 75 %)
        dense_car = ((dense_res.get("real") or {}).get("classes") or {}).get("Car", {}).get("ap_kitti")
        for lv, need in ((0.5, 0.95), (0.75, 0.85)):
            row = aggregate_row(agg, "full", lv)
            car = ((row or {}).get("real") or {}).get("classes", {}).get("Car", {}).get("ap_kitti")
            if dense_car and car is not None:
                keep = car / dense_car
                out[f"real_car_ap_kept_fraction_at_{int(lv * 100)}"] = round(keep, 4)
                out[f"real_car_ap_keeps_{int(need * 100)}pct_at_{int(lv * 100)}"] = keep >= need
        return out

    def table(self, dense_res: dict[str, Any], agg: list[dict[str, Any]],
              pairs: list[dict[str, Any]] | None = None) -> str:
        c = self.cfg
        real = (dense_res.get("real") or {}).get("data")
        lines = [f"# Pruning comparison — {c.name}", "",
                 f"mAP50-95 / mAP50: test split of `{c.data.dataset or 'generated scenes'}` at "
                 f"{c.data.imgsz[0]}x{c.data.imgsz[1]} (every choice — re-ranking, search — used the val split); "
                 f"latency: ONNX Runtime CPU, {c.latency.threads} threads, all models round-robin in one process, "
                 f"median of {c.latency.runs} runs each; {c.trials} trial(s) (mean ± std); sparsity = fraction of "
                 f"{'parameters' if c.target_metric == 'params' else 'conv FLOPs'} removed; same fine-tuning for "
                 f"every method; PPO and random search: {self.reward_evaluations()} reward evaluations each. "
                 "The seed's \"no RL\" column is `importance`, its \"RL\" column `full`.", "",
                 *comparison_table(dense_res, agg)]
        if pairs:
            lines += ["", "Paired differences (same trial = same seed, data order and stage-1 gradients):", "",
                      *paired_lines(pairs)]
        if real:
            lines += ["", f"Real-frame AP: {real} — KITTI AP|R40 at IoU 0.7 (Car) / 0.5 (Pedestrian), moderate "
                          "cut, DontCare ignored (`pruning-tools evaluate`)."]
        return "\n".join(lines) + "\n"

    def plots(self, dense_res: dict[str, Any], records: list[dict[str, Any]], space: Any) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        c = self.cfg
        colors = {"uniform": "tab:blue", "importance": "tab:orange", "random": "tab:gray", "global": "tab:purple",
                  "full": "tab:green"}
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter([dense_res["latency_ms"]], [dense_res["map50_95"] * 100], c="k", marker="*", s=120, label="dense")
        for method in c.methods:
            rs = sorted([r for r in records if r["method"] == method], key=lambda r: r["latency_ms"])
            if rs:
                ax.plot([r["latency_ms"] for r in rs], [r["map50_95"] * 100 for r in rs], "o-",
                        color=colors.get(method), label=METHOD_LABELS[method])
                for r in rs:
                    ax.annotate(f"{int(r['level'] * 100)}%", (r["latency_ms"], r["map50_95"] * 100), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"ONNX Runtime CPU latency at {c.data.imgsz[0]}x{c.data.imgsz[1]} (ms)")
        ax.set_ylabel("mAP50-95 (test split, %)")
        ax.set_title("mAP vs latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.run / "pareto.png", dpi=110)
        plt.close(fig)

        fig, axes = plt.subplots(len(c.levels), 1, figsize=(10, 2.6 * len(c.levels)), squeeze=False)
        x = np.arange(len(space.layers))
        for ax, lv in zip(axes[:, 0], c.levels):
            for method in c.methods:
                r = next((r for r in records if r["method"] == method and r["level"] == lv and r["trial"] == 0), None)
                if r is not None:
                    ax.plot(x, r["ratios"], ".-", color=colors.get(method), label=METHOD_LABELS[method], lw=1)
            ax.set_ylabel(f"ratio @ {int(lv * 100)}%")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7, loc="upper left")
        axes[-1, 0].set_xlabel("layer (coupled channel group, model order)")
        fig.suptitle("Per-layer channel ratios per method")
        fig.tight_layout()
        fig.savefig(self.run / "layer_sparsity.png", dpi=110)
        plt.close(fig)


def _mean_real(reals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std) over trials of real-frame summaries."""
    out: dict[str, Any] = {"data": reals[0].get("data"), "n_images": reals[0].get("n_images"), "classes": {}}
    for k in ("map_kitti", "map50", "map50_95"):
        vals = np.array([float(r[k]) for r in reals])
        out[k], out[f"{k}_std"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    for name in reals[0].get("classes", {}):
        cls: dict[str, Any] = {"n_gt": reals[0]["classes"][name]["n_gt"]}
        for k in ("ap_kitti", "ap50", "ap50_95"):
            vals = np.array([float(r["classes"][name][k]) for r in reals])
            cls[k], cls[f"{k}_std"] = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out["classes"][name] = cls
    return out


def on_level(history: list[dict[str, Any]], level: float) -> list[dict[str, Any]]:
    """The episodes of a search that end within :data:`LEVEL_TOLERANCE` of ``level``, best reward first.

    The environment ends every episode on the target, but channel rounding (``round_to``) of the last
    layers can overshoot it; such an episode cannot become a unit's ratios.

    :raises PruningError: when none does.
    """
    from pruning_tools.pruning import PruningError

    ok = [h for h in history if abs(float(h["sparsity"]) - level) <= LEVEL_TOLERANCE]
    if not ok:
        raise PruningError(f"no episode of the search ends within {LEVEL_TOLERANCE:.0%} of level {level} "
                           f"({len(history)} episodes)")
    return sorted(ok, key=lambda h: -h["reward"])


def _ratios_key(ratios: Any) -> str:
    from pruning_tools.finetune import ratios_key

    return ratios_key(ratios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pruning-tools prune", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True, help="YAML config (pruning_tools/configs/quick.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: config run_dir or runs/prune_<name>_<n>)")
    p.add_argument("--data", type=Path, default=None, help="override data.dataset")
    p.add_argument("--baseline", type=Path, default=None, help="override the baseline checkpoint")
    from pruning_tools.evaluate import add_real_eval_args

    add_real_eval_args(p, "columns")
    p.add_argument("--mix", nargs=2, action="append", default=[], metavar=("DIR", "REPEATS"),
                   help="also fine-tune on this YOLO dataset's train split, repeated REPEATS times per epoch "
                        "(e.g. the baseline's real training frames); may be given again; not with --ray")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the units and reward evaluations on Ray: 'local' (a Ray on this machine's cores), "
                        "'auto' (the cluster named by RAY_ADDRESS) or HOST:PORT of a head node")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
        if a.data is not None or a.baseline is not None:
            import dataclasses

            if a.data is not None:
                cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=str(a.data)))
            if a.baseline is not None:
                cfg = dataclasses.replace(cfg, baseline=str(a.baseline))
        run = a.out or (Path(cfg.run_dir) if cfg.run_dir else next_run_dir(Path("runs"), f"prune_{cfg.name}"))
        mix = [(Path(d), int(r)) for d, r in a.mix]
        if any(r < 1 for _, r in mix):
            raise ValueError("--mix REPEATS must be >= 1")
        if mix and a.ray is not None:
            raise ValueError("--mix is not supported with --ray yet (workers read only the packed dataset)")
        real = {"real_eval": a.real_eval, "real_split_file": a.real_split_file, "real_split": a.real_split}
        if a.ray is None:
            Pipeline(cfg, run, progress=not a.no_progress, mix=mix, **real).run_all()
        else:
            from pruning_tools.distributed import RayExecutor  # Ray is imported only here

            with RayExecutor(a.ray) as ex:
                Pipeline(cfg, run, progress=not a.no_progress, executor=ex, **real).run_all()
    except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"pruning-tools prune: error: {exc}", file=sys.stderr)
        return 2
    print(f"run folder: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
