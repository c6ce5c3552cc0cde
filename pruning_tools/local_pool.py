"""Reward evaluations in parallel on this machine: ``rl.workers`` processes, one torch thread each.

Stage 2 evaluates rewards in batches (:meth:`pruning_tools.rl_env.RewardProxy.prefetch`: the
episodes of one PPO rollout, the warm-up episodes, random search's vectors). Without ``--ray`` a
:class:`LocalPool` spreads each batch over worker processes. Every worker rebuilds the pipeline's
inputs once from the run's files (the resolved config, the baseline checkpoint, the dataset; no
tensors cross the process boundary) and keeps one reward proxy per :class:`ProxySpec`, so the
channel masks are built once per proxy and worker. The values equal those of the same proxy in
the driver (same seeds, same calibration batches; tested).

Workers start with ``forkserver`` (a ``fork`` of a process whose torch already runs threads can
hang) and are ended when the pool closes; a worker that dies fails the batch with its exit code.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from pruning_tools.prune_config import config_from_dict, config_to_dict

_WORKER: dict[str, Any] = {}


def _init_worker(config: dict[str, Any], run: str, mix: list[tuple[str, int]]) -> None:
    import torch

    from pruning_tools.pipeline import Pipeline

    torch.set_num_threads(1)
    cfg = dataclasses.replace(config_from_dict(config), threads=1)
    pipe = Pipeline(cfg, Path(run), progress=False, mix=[(Path(d), r) for d, r in mix])
    pipe.log = lambda msg: None  # type: ignore[method-assign]  # the driver reports
    _WORKER.update(pipe=pipe, inputs=pipe.prepare(), proxies={})


def _evaluate(spec: Any, ratios: list[float]) -> float:
    pipe, inputs, proxies = _WORKER["pipe"], _WORKER["inputs"], _WORKER["proxies"]
    if spec not in proxies:
        proxies[spec] = pipe.reward_proxy(inputs, spec, batched=False)
    return float(proxies[spec](ratios))


class LocalPool:
    """``workers`` processes evaluating reward batches for ``pipe`` (use :meth:`close` when done).

    :param pipe: the driver's pipeline (its config, run folder and mixed datasets are sent).
    :param inputs: the driver's inputs (their dataset path is sent, so workers do not generate data).
    :param workers: processes (>= 1).
    """

    def __init__(self, pipe: Any, inputs: Any, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        cfg = dataclasses.replace(pipe.cfg, baseline=str(pipe.baseline_path),
                                  data=dataclasses.replace(pipe.cfg.data, dataset=str(inputs.data)))
        self.workers = int(workers)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("forkserver"), initializer=_init_worker,
                                        initargs=(config_to_dict(cfg), str(pipe.run),
                                                  [(str(d), int(r)) for d, r in pipe.mix]))
        pipe.log(f"reward evaluations on {self.workers} local worker processes (1 torch thread each)")

    def batch_evaluator(self, spec: Any) -> Callable[[list[list[float]]], list[float]]:
        def run(batch: list[list[float]]) -> list[float]:
            return [float(v) for v in self.pool.map(_evaluate, [spec] * len(batch), batch)]

        return run

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
