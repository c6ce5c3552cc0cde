"""Reward evaluations on local worker processes give the values the driver's own proxy gives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


IMGSZ = (128, 416)


@pytest.mark.slow
def test_pool_batches_equal_in_process_values(tmp_path: Path) -> None:
    from pruning_tools.data import convert_kitti, generate_dataset
    from pruning_tools.pipeline.local_pool import LocalPool
    from pruning_tools.pipeline.prune import Pipeline
    from pruning_tools.pipeline.config import config_from_dict

    # the shipped baseline on generated scenes: proxy values that are not all zero
    generate_dataset(tmp_path / "kitti", frames=10, seed=3, progress=False)
    data = convert_kitti(tmp_path / "kitti", tmp_path / "yolo", split=(0.5, 0.3, 0.2), progress=False)
    cfg = config_from_dict({"name": "pool", "levels": [0.3], "round_to": 16, "threads": 1,
                            "data": {"dataset": str(data), "imgsz": list(IMGSZ)},
                            "rl": {"bn_batches": 1, "bn_batch": 2, "ft_steps": 1, "workers": 2}})
    pipe = Pipeline(cfg, tmp_path / "run", progress=False)
    inputs = pipe.prepare()
    space = inputs.space
    rng = np.random.default_rng(3)
    vectors = [space.uniform(0.3, 0.9)] + [space.solve(rng.uniform(0.05, 1.0, len(space)), 0.3, 0.9)
                                           for _ in range(3)]
    session = pipe.session(inputs)
    spec = session.proxy_spec(0)
    here = session.reward_proxy(spec)  # no pool yet: evaluated in this process
    want = [here(v) for v in vectors]
    assert max(want) > 0.01, want  # a comparison of zeros would prove nothing
    pool = LocalPool(pipe.worker_session_factory(inputs), 2)
    try:
        session.evaluator = pool
        proxy = session.reward_proxy(spec)
        assert proxy.batch_evaluate is not None
        proxy.prefetch(vectors + vectors[:1])  # a repeated vector is evaluated once
        assert proxy.calls == len(vectors)
        got = [proxy(v) for v in vectors]  # read from the cache the batch filled
        assert proxy.calls == len(vectors)
    finally:
        pool.close()
        session.evaluator = None
    assert got == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        LocalPool(pipe.worker_session_factory(inputs), 0)
