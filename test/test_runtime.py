"""EnginePool from a real tiny zoo: swap atomicity under concurrent detection, errors."""
import json
import statistics
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from runtime_models import NAMES, export_tiny, tiny_zoo  # noqa: E402

from sparse_perception.runtime.engine_pool import EnginePool, RuntimeConfig, UnknownLevelError  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_zoo(tmp_path_factory.mktemp("zoo"))


def test_pool_loads_and_detects(zoo: Path) -> None:
    pool = EnginePool.from_manifest(zoo, cfg=RuntimeConfig(threads=1, warmup_runs=1))
    assert pool.levels() == ["dense", "s50", "s75"] and pool.active_level == "dense"
    res = pool.detect(np.zeros((375, 1242, 3), np.uint8))
    assert res.class_names == NAMES and res.level == "dense" and set(res.timing) >= {"inference_ms", "total_ms"}
    assert res.boxes.shape[1] == 4 and (res.boxes[:, 2] <= 1242).all()
    pool.swap_to_sparsity(0.7)
    assert pool.active_level == "s75" and pool.status()["sparsity"] == 0.75
    with pytest.raises(UnknownLevelError, match="available levels"):
        pool.swap("s99")
    assert pool.active_level == "s75"
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8), np.zeros((5, 5, 4), np.uint8),
                np.zeros((5, 5, 3), np.float32), "img"):
        with pytest.raises(ValueError):
            pool.detect(bad)  # type: ignore[arg-type]
    assert len(pool.detect(np.zeros((100, 200, 3), np.uint8)).boxes.shape) == 2
    pool.close()


def test_swap_atomic_under_concurrent_detect(zoo: Path) -> None:
    pool = EnginePool.from_manifest(zoo, ["dense", "s75"], cfg=RuntimeConfig(threads=1, warmup_runs=0))
    frames = 200
    seen: list[tuple[int, str]] = []
    done = threading.Event()
    img = np.zeros((96, 312, 3), np.uint8)

    def worker() -> None:
        for i in range(frames):
            seen.append((i, pool.detect(img).level))
        done.set()

    swaps: list[float] = []
    t = threading.Thread(target=worker)
    t.start()
    k = 0
    while not done.is_set():
        swaps.append(pool.swap(("s75", "dense")[k % 2]))
        k += 1
        done.wait(0.002)
    t.join()
    assert [i for i, _ in seen] == list(range(frames))  # each frame exactly once
    assert {lv for _, lv in seen} <= {"dense", "s75"}
    assert len({lv for _, lv in seen}) == 2 and len(swaps) > 10
    assert statistics.median(swaps) < 1.0  # ms; pointer exchange


def test_tampered_artifact_refused(tmp_path: Path) -> None:
    m = tiny_zoo(tmp_path, {"dense": (0.0, 4)})
    with (tmp_path / "dense" / "model.onnx").open("ab") as f:
        f.write(b"x")
    with pytest.raises(Exception, match="sha256"):
        EnginePool.from_manifest(m)
    data = json.loads(m.read_text())
    with pytest.raises(UnknownLevelError, match="available levels"):
        EnginePool.from_manifest(m, ["s50"])
    assert data["artifacts"][0]["level"] == "dense"


def test_from_model(tmp_path: Path) -> None:
    pool = EnginePool.from_model(export_tiny(tmp_path / "stock.onnx", dynamic=True), RuntimeConfig(warmup_runs=0))
    assert pool.levels() == ["model"] and pool.status()["backend"] == "onnxruntime"
    with pytest.raises(FileNotFoundError):
        EnginePool.from_model(tmp_path / "none.onnx")
    with pytest.raises(ValueError):
        RuntimeConfig(conf_thres=1.5)


def test_dotted_latency_levels_swap_by_name_and_excluded_levels_are_not_loaded(tmp_path: Path) -> None:
    """``x1.5``-style level names (``target_metric: latency``) through the pool and ``~/set_sparsity``'s core;
    a level the export's ladder left out is not in ``artifacts``, so the node can neither load nor select it."""
    from sparse_perception.runtime.detector_core import DetectorCore
    from sparse_perception.runtime.zoo import write_manifest

    path = tiny_zoo(tmp_path, {"dense": (0.0, 8), "x1.5": (0.3, 4), "s50": (0.5, 4)})
    data = json.loads(path.read_text())
    s50 = [a for a in data["artifacts"] if a["level"] == "s50"]
    data["artifacts"] = [a for a in data["artifacts"] if a["level"] != "s50"]
    row = {"backend": "onnxruntime", "precision": "fp32", "reason": "r"}
    data["ladder"] = {"levels": [{**row, "level": "dense"}, {**row, "level": "x1.5", "speedup_target": 1.5}],
                      "excluded": [{**row, "level": "s50", "artifacts": s50}]}
    write_manifest(path, data)
    pool = EnginePool.from_manifest(path, cfg=RuntimeConfig(threads=1, warmup_runs=0))
    assert pool.levels() == ["dense", "x1.5"]
    core = DetectorCore(log=type("L", (), {"info": print, "error": print})())
    core.load(pool, None, "manual")
    ok, msg, _ = core.set_sparsity("x1.5", -1.0)
    assert ok and "'x1.5'" in msg and pool.active_level == "x1.5"
    assert pool.detect(np.zeros((50, 80, 3), np.uint8)).level == "x1.5"
    ok, msg, _ = core.set_sparsity("s50", -1.0)
    assert not ok and "s50" in msg and "x1.5" in msg  # names the available levels
    core.release()
