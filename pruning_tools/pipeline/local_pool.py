"""Reward evaluations in parallel on this machine: ``rl.workers`` processes, one torch thread each.

Stage 2 evaluates rewards in batches (:meth:`pruning_tools.search.env.RewardProxy.prefetch`: the
episodes of one PPO rollout, the warm-up episodes, random search's vectors). Without ``--ray`` a
:class:`LocalPool` spreads each batch over worker processes. Every worker builds its
:class:`~pruning_tools.search.session.SearchSession` once with the pool's factory
(:meth:`pruning_tools.pipeline.prune.Pipeline.worker_session_factory`: the run's config, baseline and
dataset; no tensors cross the process boundary) and keeps one reward proxy per
:class:`~pruning_tools.search.proxy.ProxySpec`, so the channel masks are built once per proxy and
worker. The values equal those of the same proxy in the driver (same seeds, same calibration
batches; tested).

Workers start with ``forkserver`` (a ``fork`` of a process whose torch already runs threads can
hang) and are ended when the pool closes; a worker that dies fails the batch with its exit code.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

_WORKER: dict[str, Any] = {}


def _init_worker(factory: Callable[[], Any]) -> None:
    _WORKER.update(session=factory(), proxies={})


def _evaluate(spec: Any, ratios: list[float]) -> float:
    session, proxies = _WORKER["session"], _WORKER["proxies"]
    if spec not in proxies:
        proxies[spec] = session.reward_proxy(spec, batched=False)
    return float(proxies[spec](ratios))


class LocalPool:
    """``workers`` processes evaluating reward batches (use :meth:`close` when done).

    :param factory: a picklable ``() -> SearchSession``, called once in each worker.
    :param workers: processes (>= 1).
    """

    def __init__(self, factory: Callable[[], Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("forkserver"),
                                        initializer=_init_worker, initargs=(factory,))

    def batch_evaluator(self, spec: Any) -> Callable[[list[list[float]]], list[float]]:
        def run(batch: list[list[float]]) -> list[float]:
            return [float(v) for v in self.pool.map(_evaluate, [spec] * len(batch), batch)]

        return run

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
