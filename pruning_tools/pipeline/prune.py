"""The prune run behind ``pruning-tools prune`` (:mod:`pruning_tools.pipeline.cli`): for each trial,
level and strategy -> ratios -> surgery + fine-tune -> measure -> record; then the comparison table.

For every target level (parameter sparsity, default 50/75/90 %) and trial, each method of
:mod:`pruning_tools.search.strategies` (``uniform``, ``importance`` — the seed's "no RL", ``random``,
``global``, ``full`` — the seed's "RL") turns the dense model into per-layer ratios meeting the level
(within 1 %, else an error), and every one gets the same stage-3 pruning + fine-tuning. One
(method, level, trial) unit is :meth:`Pipeline.run_unit`; selection (search, re-ranking) uses the
val split only, the test split is only reported. Latencies are measured at the end, every model
round-robin in one process, with the resolution baseline (the dense model at smaller inputs,
:mod:`pruning_tools.pipeline.resolution`) in the same round-robin.

Run-directory layout (consumed by ``pruning-tools export``)::

    <run>/config.yaml            the resolved configuration
    <run>/summary.json           checkpoints: method, level, achieved sparsity, mAP, path
    <run>/results.json           every measurement + aggregates (mean, std over trials)
    <run>/table.md               Table-1-style markdown
    <run>/pareto.png             mAP50-95 (and real Car AP) vs measured latency; the resolution baseline
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
    <run>/resolution/<H>x<W>/{result.json,model.onnx}  the resolution baseline: the dense model at a
                                 smaller input (:mod:`pruning_tools.pipeline.resolution`)

Re-running the same command resumes: finished results are kept, an interrupted stage-3 job
continues from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pruning_tools.assets import DEFAULT_BASELINE
from pruning_tools.data.files import write_json
from pruning_tools.pipeline.config import ConfigError, PruneConfig, config_from_dict, config_to_dict
from pruning_tools.pipeline.report import write_report
from pruning_tools.search.session import Inputs, SearchSession
from pruning_tools.search.strategies import (LEVEL_TOLERANCE, UnitContext, get_method, level_name, level_speedup,
                                             within_level)

Unit = tuple[str, float, int]


def level_dir(run: Path, method: str, level: float, trial: int, metric: str = "params") -> Path:
    """``<run>/<method>/<level name>`` (trial 0; ``s50``, or ``x2`` for latency levels) or ``.../t<k>``."""
    d = run / method / level_name(level, metric)
    return d if trial == 0 else d / f"t{trial}"


def unit_tag(unit: Unit, metric: str = "params") -> str:
    """``<method> <level name> t<k>``: how logs name a unit."""
    method, level, trial = unit
    return f"{method} {level_name(level, metric)} t{trial}"


def next_run_dir(base: Path, name: str) -> Path:
    """``<base>/<name>_<n>`` with the next free ``n``."""
    n = 1
    while (base / f"{name}_{n}").exists():
        n += 1
    return base / f"{name}_{n}"


class Pipeline:
    """Runs the comparison described in the module docstring.

    :param cfg: validated configuration.
    :param run_dir: output folder (created; re-use resumes).
    :param progress: show progress bars.
    :param executor: runs the (method, level, trial) units and reward-evaluation batches elsewhere
        (:class:`pruning_tools.pipeline.ray_executor.RayExecutor`); ``None``: everything in this process.
    :param real_eval: a real KITTI object root: every measurement also gets real-frame AP
        (:func:`pruning_tools.train.evaluate.real_eval_frames`: the baseline's real train/val frames left out,
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
        # inputs that can be checked now are, before the run folder exists (a typo must leave nothing behind)
        for what, root in [("data.dataset (--data)", cfg.data.dataset), *(("--mix", d) for d, _ in self.mix)]:
            if root and not Path(root).is_dir():
                raise FileNotFoundError(f"{what}: dataset folder {root} does not exist")
        self.run.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.real_eval, self.real_split_file, self.real_split = real_eval, real_split_file, real_split
        self._real: Any = None
        self._inputs: Inputs | None = None
        self._session: SearchSession | None = None

    def log(self, msg: str) -> None:
        print(f"[prune {time.monotonic() - self.t0:7.1f}s] {msg}", flush=True)

    # ------------------------------------------------------------------ inputs
    def dataset(self) -> Path:
        """The YOLO dataset: configured, or generated scenes converted into ``<run>/data``."""
        from pruning_tools.data.yolo import report_split, resolve_split_dir

        c = self.cfg.data
        if c.dataset:
            root = Path(c.dataset)
        else:
            root = self.run / "data" / "yolo"
            if not (root / "data.yaml").is_file():
                try:
                    from pruning_tools.data import convert_kitti, generate_dataset
                except ImportError as exc:
                    raise ConfigError(f"data.dataset not set and the scene generator is unavailable ({exc})") from exc
                self.log(f"generating {c.generate_frames} scenes (seed {c.generate_seed})")
                raw = self.run / "data" / "kitti"
                generate_dataset(raw, frames=c.generate_frames, seed=c.generate_seed, progress=self.progress)
                convert_kitti(raw, root, progress=self.progress)
        for split in ("train", "val"):
            resolve_split_dir(root, split)  # clear error on missing / empty splits
        if report_split(root) != "test":
            self.log(f"{root} has no test split: accuracy is reported on val (the split choices are made on)")
        return root

    def baseline(self) -> torch.nn.Module:
        from pruning_tools.ultralytics_adapter import load_checkpoint

        path = Path(self.cfg.baseline) if self.cfg.baseline else DEFAULT_BASELINE
        model, _ = load_checkpoint(path)
        self.baseline_path = path.resolve()
        return model

    # ------------------------------------------------------------------ measurements
    def measure(self, model: torch.nn.Module, data: Path, onnx_path: Path | None = None) -> dict[str, Any]:
        from pruning_tools.data.yolo import report_split
        from pruning_tools.train.evaluate import evaluate_model
        from pruning_tools.train.measure import count_flops, model_latency

        c = self.cfg
        split = report_split(data)
        m = evaluate_model(model, data, split, c.data.imgsz, max_images=c.data.test_images, progress=self.progress)
        self.evaluator = m.get("evaluator", "?")
        gflops, params = count_flops(model, c.data.imgsz)
        # one timed run here (the ONNX file and its size); Table 1's latencies come from the interleaved
        # round-robin of every model in report()
        lat = model_latency(model, c.data.imgsz, c.latency.threads, 1, 1, keep=onnx_path)
        out = {"map50_95": float(m["map50_95"]), "map50": float(m["map50"]), "evaluator": self.evaluator,
               "split": split,
               "latency_ms": lat["median_ms"],
               "latency": lat, "gflops": round(gflops, 4), "params": params,
               "size_mb": round(lat["onnx_bytes"] / 1e6, 3)}
        real = self.measure_real(model)
        if real is not None:
            out["real"] = real
        return out

    def measure_real(self, model: torch.nn.Module, imgsz: tuple[int, int] | None = None) -> dict[str, Any] | None:
        """Real-frame AP of ``model`` at ``imgsz`` (default ``data.imgsz``; ``None`` without ``real_eval``)."""
        if self.real_eval is None:
            return None
        from pruning_tools.train.evaluate import real_eval_frames, real_summary, torch_detector
        from pruning_tools.ultralytics_adapter import class_names

        if self._real is None:
            self._real = real_eval_frames(self.real_eval, getattr(self, "baseline_path", None), self.real_split_file,
                                          self.real_split, self.progress)
            self.log(f"real-frame evaluation on {self._real.description}")
        res = self._real.evaluate(torch_detector(model, class_names(model), imgsz or self.cfg.data.imgsz))
        return real_summary(res)

    def _add_missing_real(self, rec: dict[str, Any], path: Path) -> dict[str, Any]:
        """A result without real-frame AP (an earlier run without ``real_eval``, or a unit run elsewhere):
        measure its checkpoint on the real frames here."""
        if self.real_eval is None or "real" in rec:
            return rec
        from pruning_tools.ultralytics_adapter import load_checkpoint

        model = self.baseline() if rec.get("method") == "dense" else load_checkpoint(self.run / rec["checkpoint"])[0]
        rec = {**rec, "real": self.measure_real(model)}
        write_json(path, rec)
        return rec

    # ------------------------------------------------------------------ shared inputs
    def prepare(self) -> Inputs:
        """Dataset, dense model (eval mode), pruning space and training split (no measurement).

        Idempotent: a second call returns the same :class:`Inputs`.
        """
        if self._inputs is not None:
            return self._inputs
        from pruning_tools.surgery.channels import PruningSpace, check_target

        c = self.cfg
        for lv in c.targets:
            check_target(lv, "level")
        torch.set_num_threads(c.threads)
        data = self.dataset()
        dense = self.baseline()
        dense.eval()
        space = PruningSpace(dense, c.data.imgsz, c.round_to, c.target_metric)
        if c.target_metric == "latency":
            space.attach_latency(self.latency_model(space, dense))
        for lv, name in zip(c.targets, c.levels):
            if space.max_sparsity(c.max_ratio) < lv:
                raise ConfigError(f"level {name} unreachable with max_ratio {c.max_ratio} "
                                  f"(at most {space.max_sparsity(c.max_ratio):.3f})")
        self._inputs = Inputs(data=data, dense=dense, space=space, train_ds=self.train_dataset(data, c.data.imgsz))
        return self._inputs

    def latency_model(self, space: Any, dense: torch.nn.Module) -> Any:
        """The latency model of ``target_metric: latency``: ``<run>/latency_model.json`` when an earlier
        run (or the driver, for a worker) wrote it; else the machine's cached table (missing blocks
        measured) calibrated on whole pruned networks, then written there."""
        from pruning_tools.quant.latency import LatencyModel, build_latency_model

        lc = self.cfg.latency
        path = self.run / "latency_model.json"
        if path.is_file():
            lm = LatencyModel.load(space, path)
            if lm.table.precision == lc.precision and lm.grid == lc.grid:
                return lm
            self.log(f"latency model {path} is for {lm.table.precision}, grid {lm.grid}: building it anew")
        lm = build_latency_model(space, dense, lc.precision, lc.threads, lc.grid, lc.cache_dir, lc.calibrate_models,
                                 self.cfg.seed, runs=max(lc.runs, 20), progress=self.progress, log=self.log)
        lm.save(path)
        cal = lm.calibration or {}
        self.log(f"latency model ({lc.precision}): dense {lm.dense_ms:.1f} ms predicted; offset "
                 f"{cal.get('offset_ms')} ms, scale {cal.get('scale')} on {cal.get('models')} networks")
        return lm

    def train_dataset(self, data: Path, imgsz: tuple[int, int]) -> Any:
        """The training split at ``imgsz`` (first ``data.train_images``), mixed with ``self.mix``."""
        from pruning_tools.data.yolo import YoloDataset

        c = self.cfg
        n = c.data.train_images
        ds = YoloDataset(data, "train", imgsz)
        if n is not None and n < len(ds):
            ds = YoloDataset(data, "train", imgsz, indices=list(range(n)))
        if self.mix:
            from pruning_tools.data.yolo import MixedDataset

            parts = [YoloDataset(d, "train", imgsz, cache=True) for d, _ in self.mix]
            self.log("training batches mix in " + ", ".join(f"{d} ({len(p)} frames x {r})"
                                                          for (d, r), p in zip(self.mix, parts)))
            ds = MixedDataset([ds, *parts], [1, *(r for _, r in self.mix)])
        return ds

    def session(self, inputs: Inputs | None = None) -> SearchSession:
        """The run's stage-1/stage-2 machinery on ``inputs`` (default: :meth:`prepare`'s); reward
        batches go to the executor when there is one."""
        inputs = self.prepare() if inputs is None else inputs
        if self._session is None or self._session.inputs is not inputs:
            self._session = SearchSession(self.cfg, self.run, inputs, self.train_dataset, self.log, self.progress,
                                          evaluator=self.executor)
        return self._session

    def needs_stage1(self) -> bool:
        """Whether a strategy of the config uses stage 1."""
        return any(get_method(m).uses_importance for m in self.cfg.methods)

    # ------------------------------------------------------------------ units
    def finished(self, unit: Unit) -> dict[str, Any] | None:
        """The recorded result of ``unit`` (``None`` while it has not finished)."""
        path = level_dir(self.run, *unit, self.cfg.target_metric) / "result.json"
        if not path.is_file():
            return None
        self.log(f"{unit_tag(unit, self.cfg.target_metric)}: done earlier (resume)")
        return json.loads(path.read_text())

    def run_unit(self, inputs: Inputs, method: str, level: float, trial: int, stage1: dict[str, Any] | None,
                 dense_res: dict[str, Any]) -> dict[str, Any]:
        """One (strategy, level, trial) unit: ratios -> surgery + fine-tune -> measure -> record.

        A pure function of its arguments and the seed, so it gives the same result wherever it runs
        (an executor runs units in other processes). A finished unit's ``result.json`` is returned as is.

        :param stage1: the trial's stage-1 result (needed by the strategies that use stage 1).
        :raises PruningError: when the strategy's ratios or the pruned model miss the level by more than 1 %.
        """
        from pruning_tools.data.yolo import BatchStream
        from pruning_tools.surgery.channels import PruningError
        from pruning_tools.surgery.finetune import FinetuneConfig, prune_and_finetune, ratios_key
        from pruning_tools.ultralytics_adapter import save_checkpoint

        c, space = self.cfg, inputs.space
        m = get_method(method)
        if m.uses_importance and not stage1:
            raise ValueError(f"method {method!r} needs the trial's stage-1 result")
        if stage1:  # the layers' importance is part of the stage-2 observation
            for layer, imp in zip(space.layers, stage1["importance"]):
                layer.importance = float(imp)
        done = self.finished((method, level, trial))
        if done is not None:
            return done
        out = level_dir(self.run, method, level, trial, c.target_metric)
        tag = unit_tag((method, level, trial), c.target_metric)
        name = level_name(level, c.target_metric)
        t_m = time.monotonic()
        seed = c.seed + trial
        torch.manual_seed(seed)
        # 1. ratios
        result = m.ratios(UnitContext(self.session(inputs), level, trial, out, stage1))
        ratios = np.asarray(result.ratios, dtype=np.float64)
        achieved = float(space.sparsity(ratios))
        if not within_level(achieved, level, c.target_metric):
            hint = ""
            if c.target_metric == "latency":  # seen here: a table timed while other jobs loaded the cores
                from pruning_tools.quant.latency import default_cache_dir

                where = c.latency.cache_dir or default_cache_dir()
                hint = (f"; a latency table timed on a busy machine has uneven steps: delete the cached table in "
                        f"{where} and {self.run / 'latency_model.json'} to time it again on a quiet one")
            raise PruningError(f"method {method!r} at level {level} (trial {trial}): its ratios reach "
                               f"{achieved:.4f}, off the level (tolerance {LEVEL_TOLERANCE:.0%}; latency "
                               f"levels may run up to 3 % faster){hint}")
        if result.history is not None:
            write_json(out / "search.json", {**result.search, "history": result.history, "ratios": ratios})
        # 2. surgery + fine-tuning (stage 3, the same for every strategy)
        stream = BatchStream(inputs.train_ds, c.finetune.batch, seed, c.finetune.crop_width)
        fcfg = FinetuneConfig(prune_steps=c.finetune.prune_steps, steps_per_prune=c.finetune.steps_per_prune,
                              final_steps=c.finetune.final_steps, batch=c.finetune.batch,
                              lr0=c.finetune.lr0, checkpoint_every=c.finetune.checkpoint_every,
                              bn_batches=c.finetune.bn_batches, seed=seed,
                              distill_weight=c.finetune.distill_weight,
                              distill_temperature=c.finetune.distill_temperature)
        choice = "gradient" if result.channel_scores is not None else "magnitude"
        meta = {"kind": "pruned", "method": method, "level": level, "level_name": name,
                "target_metric": c.target_metric, "trial": trial, "seed": seed,
                "baseline": str(self.baseline_path.name), "ratios": [float(r) for r in ratios],
                "layers": [l.name for l in space.layers], "round_to": c.round_to, "channel_choice": choice}
        model, ft = prune_and_finetune(inputs.dense, space, ratios, stream, out, fcfg, meta, result.channel_scores,
                                       self.progress, desc=f"stage 3: {method} {name}")
        # 3. measure (test split)
        meas = self.measure(model, inputs.data, out / "model.onnx")
        rec = {"method": method, "level": level, "level_name": name, "trial": trial, "seed": seed,
               "sparsity": round(1 - meas["params"] / dense_res["params"], 4),
               "target_metric": c.target_metric, "achieved_target": round(achieved, 4),
               "flops_reduction": round(1 - meas["gflops"] / dense_res["gflops"], 4), **meas,
               "ratios": [float(r) for r in ratios], "channel_choice": choice, "finetune": ft,
               "search": result.search, "checkpoint": str((out / "model.pt").relative_to(self.run)),
               "onnx": str((out / "model.onnx").relative_to(self.run)),
               "wall_s": round(time.monotonic() - t_m, 1)}
        if c.target_metric == "latency":  # measured against the dense model interleaved in report(): missed, not an error
            rec["speedup_target"] = round(level_speedup(level), 4)
            rec["speedup_predicted"] = round(level_speedup(achieved), 4)
        measured = {"params": rec["sparsity"], "flops": rec["flops_reduction"]}.get(c.target_metric, level)
        if abs(measured - level) > LEVEL_TOLERANCE:
            raise PruningError(f"method {method!r} at level {level} (trial {trial}): the pruned model has "
                               f"{c.target_metric} sparsity {measured:.4f}, more than {LEVEL_TOLERANCE:.0%} from "
                               f"the level (checkpoint kept: {out / 'model.pt'})")
        # 4. record: in the checkpoint's meta too (export reads either)
        save_checkpoint(model, out / "model.pt", {**meta, "ratios_key": ratios_key(ratios),
                                                  "finetune": ft, "map50_95": meas["map50_95"],
                                                  "map50": meas["map50"], "sparsity": rec["sparsity"]})
        write_json(out / "result.json", rec)
        self.log(f"{tag}: mAP50-95 {meas['map50_95']:.4f} mAP50 {meas['map50']:.4f} sparsity {rec['sparsity']:.3f} "
                 f"({rec['wall_s']:.0f} s)")
        return rec

    def units(self) -> list[Unit]:
        """Every (strategy, level, trial) of the config, in run order."""
        c = self.cfg
        return [(m, lv, t) for t in range(c.trials) for lv in c.targets for m in c.methods]

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
            write_json(dense_path, dense_res)
        units = self.units()
        done = {u: rec for u in units for rec in [self.finished(u)] if rec is not None}
        todo = [u for u in units if u not in done]
        session = self.session(inputs)
        stage1 = {t: session.stage1(t) if self.needs_stage1() else None for t in sorted({u[2] for u in todo})}
        if self.executor is not None and todo:
            done.update(self.executor.run_units(self, inputs, todo, stage1, dense_res))
        elif todo:
            pool = None
            if c.rl.workers > 1 and any(get_method(u[0]).uses_proxy for u in todo):
                from pruning_tools.pipeline.local_pool import LocalPool

                pool = session.evaluator = LocalPool(self.worker_session_factory(inputs), c.rl.workers)
                self.log(f"reward evaluations on {pool.workers} local worker processes (1 torch thread each)")
            try:
                for k, u in enumerate(todo):
                    self.log(f"unit {k + 1}/{len(todo)}: {unit_tag(u, c.target_metric)}")
                    done[u] = self.run_unit(inputs, *u, stage1[u[2]], dense_res)
            finally:
                if pool is not None:
                    pool.close()
                    session.evaluator = None
        # real-frame AP for results measured without it (earlier runs, units run on other nodes)
        done = {u: self._add_missing_real(r, level_dir(self.run, *u, c.target_metric) / "result.json")
                for u, r in done.items()}
        return self.report(dense_res, [done[u] for u in units], inputs.space)

    # ------------------------------------------------------------------ outputs
    def interleave_latency(self, dense_res: dict[str, Any], records: list[dict[str, Any]],
                           extra: dict[str, Path] | None = None
                           ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """Every model of the table timed round-robin in this process (``latency.runs`` each, medians);
        returns copies of ``dense_res`` and ``records`` whose ``latency_ms`` are those medians.

        :param extra: further ONNX files (key -> path) timed in the same round-robin, e.g. the resolution
            baseline's; their timings are the returned info's ``"extra"`` (key -> timing)."""
        from pruning_tools.train.measure import interleaved_latency
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
        paths.update(extra or {})
        self.log(f"latency: {len(paths)} models round-robin, {c.latency.runs} timed runs each")
        lat = interleaved_latency(paths, c.data.imgsz, c.latency.threads, c.latency.warmup, c.latency.runs)
        dense_out = {**dense_res, "latency_ms": lat["dense"]["median_ms"], "latency": lat["dense"]}
        recs = []
        for r in records:
            k = f"{r['method']}/{r['level']}/{r['trial']}"
            recs.append({**r, "latency_unit_ms": r["latency_ms"], "latency_ms": lat[k]["median_ms"], "latency": lat[k]})
        info = {"method": "interleaved round-robin in one process", "models": len(paths), "runs": c.latency.runs,
                "warmup": c.latency.warmup, "threads": c.latency.threads}
        if extra:
            info["extra"] = {k: lat[k] for k in extra}
        return dense_out, recs, info

    def report(self, dense_res: dict[str, Any], records: list[dict[str, Any]], space: Any) -> dict[str, Any]:
        """Latencies interleaved, then ``results.json``, ``table.md``, ``summary.json`` and the plots."""
        from pruning_tools.pipeline import resolution

        sizes = resolution.measure_ladder(self, resolution.ladder(self.cfg))
        dense_res, records, lat_info = self.interleave_latency(
            dense_res, records, {resolution.latency_key(r): self.run / r["onnx"] for r in sizes})
        timed = lat_info.pop("extra", {})
        sizes = [{**r, "latency_ms": timed[resolution.latency_key(r)]["median_ms"],
                  "latency": timed[resolution.latency_key(r)]} for r in sizes]
        if self.cfg.target_metric == "latency":
            records, lat_info["speedup_check"] = self.check_speedups(dense_res, records)
        results = write_report(self.run, self.cfg, dense_res, records, [l.name for l in space.layers], lat_info,
                               baseline=str(self.baseline_path), mix=self.mix, resolution=sizes,
                               evaluator=getattr(self, "evaluator", dense_res.get("evaluator")),
                               wall_s=round(time.monotonic() - self.t0, 1), log=self.log)
        self.log(f"wrote {self.run}/table.md, results.json, summary.json, pareto.png, layer_sparsity.png")
        return results

    def check_speedups(self, dense_res: dict[str, Any], records: list[dict[str, Any]]
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every latency level measured: its speed-up over the dense model at ``latency.precision`` (the
        FP32 figures of the table's round-robin, or an INT8 round-robin of dense and every model), and
        ``speedup_missed`` where it is more than ``latency.miss_tolerance`` below the level's."""
        from pruning_tools.quant.latency import export_for_timing
        from pruning_tools.train.measure import interleaved_latency
        from pruning_tools.ultralytics_adapter import load_checkpoint

        c = self.cfg
        lc = c.latency
        if lc.precision == "fp32":
            dense_ms = float(dense_res["latency_ms"])
            ms = {i: float(r["latency_ms"]) for i, r in enumerate(records)}
            how = "the table's FP32 round-robin"
        else:
            paths = {"dense": self.run / f"dense_{lc.precision}_timing.onnx"}
            if not paths["dense"].is_file():
                export_for_timing(self.prepare().dense, paths["dense"], c.data.imgsz, lc.precision)
            for i, r in enumerate(records):
                p = (self.run / r["checkpoint"]).with_name(f"model_{lc.precision}_timing.onnx")
                if not p.is_file():
                    export_for_timing(load_checkpoint(self.run / r["checkpoint"])[0], p, c.data.imgsz, lc.precision)
                paths[str(i)] = p
            self.log(f"speed-ups: {len(paths)} {lc.precision} models round-robin, {max(lc.runs, 20)} runs each")
            lat = interleaved_latency(paths, c.data.imgsz, lc.threads, lc.warmup, max(lc.runs, 20))
            dense_ms = lat["dense"]["median_ms"]
            ms = {i: lat[str(i)]["median_ms"] for i in range(len(records))}
            how = f"{lc.precision} round-robin of dense and every model (timing-only INT8 files)"
        out = []
        for i, r in enumerate(records):
            sp = dense_ms / ms[i]
            target = float(r.get("speedup_target", level_speedup(r["level"])))
            out.append({**r, "speedup_measured": round(sp, 4), "speedup_precision": lc.precision,
                        "speedup_missed": bool(sp < (1.0 - lc.miss_tolerance) * target)})
            if out[-1]["speedup_missed"]:
                self.log(f"{r['method']} {r.get('level_name')} t{r['trial']}: measured x{sp:.2f}, misses its level "
                         f"x{target:g} by more than {lc.miss_tolerance:.0%} (reported as missed)")
        return out, {"precision": lc.precision, "how": how, "dense_ms": round(dense_ms, 3),
                     "miss_tolerance": lc.miss_tolerance}

    def worker_session_factory(self, inputs: Inputs) -> Any:
        """A picklable ``() -> SearchSession`` for reward workers: the run's config (with this baseline
        and ``inputs``' dataset, so workers do not generate data), run folder and mixed datasets."""
        cfg = dataclasses.replace(self.cfg, baseline=str(self.baseline_path),
                                  data=dataclasses.replace(self.cfg.data, dataset=str(inputs.data)))
        return partial(worker_session, config_to_dict(cfg), str(self.run), [(str(d), int(r)) for d, r in self.mix])


def worker_session(config: dict[str, Any], run: str, mix: list[tuple[str, int]]) -> SearchSession:
    """The :class:`SearchSession` of a reward worker process: one torch thread, no logging (the driver
    reports), inputs rebuilt from the run's files (no tensors cross the process boundary)."""
    torch.set_num_threads(1)
    cfg = dataclasses.replace(config_from_dict(config), threads=1)
    pipe = Pipeline(cfg, Path(run), progress=False, mix=[(Path(d), r) for d, r in mix])
    pipe.log = lambda msg: None  # type: ignore[method-assign]
    return pipe.session()
