"""Build a small real engine zoo for node tests: dense + structurally pruned ONNX levels.

Used by the ``test_zoo`` fixture (test/conftest.py) and by the launch tests, which cannot use
pytest fixtures. Weights: the shipped baseline when present, else an untrained ``yolov5n``
(plumbing tests do not need accuracy). Pruning is real Torch-Pruning surgery via
``pruning_tools.surgery.channels``; the manifest is written with ``sparse_perception.runtime.zoo.write_manifest``.

Usage as a script (launch tests call it in a subprocess-free way too)::

    python test/helpers/zoo_builder.py OUT_DIR [--imgsz 96 320] [--levels dense:0 s50:0.5]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "pruning_tools" / "assets" / "baseline_yolov5n.pt"
DEFAULT_LEVELS = (("dense", 0.0), ("s50", 0.5), ("s75", 0.75))


def load_weights(use_baseline: bool = True):
    """:return: (model, source) — the shipped baseline if present, else an untrained yolov5n."""
    from pruning_tools import ultralytics_adapter as ua

    if use_baseline and BASELINE.is_file():
        model, _ = ua.load_checkpoint(BASELINE)
        return model, str(BASELINE)
    return ua.build_model("yolov5n.yaml", nc=3), "untrained yolov5n.yaml"


def build_zoo(out: str | Path, imgsz: tuple[int, int] = (96, 320),
              levels: tuple[tuple[str, float], ...] = DEFAULT_LEVELS, use_baseline: bool = True) -> Path:
    """Export every level to ``out/<level>/model_fp32.onnx`` and write ``out/manifest.json``.

    :return: the manifest path (reused when it already exists).
    """
    import torch

    from pruning_tools import ultralytics_adapter as ua
    from pruning_tools.surgery.channels import PruningSpace, apply_ratios
    from sparse_perception.runtime.zoo import sha256_file, write_manifest

    out = Path(out)
    manifest = out / "manifest.json"
    if manifest.is_file():
        return manifest
    torch.set_num_threads(min(2, torch.get_num_threads()))
    dense, source = load_weights(use_baseline)
    names = ua.class_names(dense)
    space = PruningSpace(dense, imgsz=imgsz) if any(s > 0 for _, s in levels) else None
    artifacts = []
    for level, sparsity in levels:
        model = copy.deepcopy(dense)
        if sparsity > 0:
            assert space is not None
            apply_ratios(model, space, space.uniform(sparsity))
        path = ua.export_onnx(model.eval(), out / level / "model_fp32.onnx", imgsz=imgsz, class_names=names)
        artifacts.append({
            "level": level, "sparsity": float(sparsity), "precision": "fp32", "backend": "onnxruntime",
            "path": f"{level}/model_fp32.onnx", "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
            "input_shape": [1, 3, int(imgsz[0]), int(imgsz[1])], "class_names": list(names), "selected": True,
            "source_checkpoint": source,
        })
    write_manifest(manifest, {"schema_version": 1, "model_family": "yolov5n", "class_names": list(names),
                              "data": {"source": "test zoo"}, "artifacts": artifacts})
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, nargs=2, default=(96, 320))
    ap.add_argument("--levels", nargs="+", default=[f"{n}:{s}" for n, s in DEFAULT_LEVELS])
    ap.add_argument("--untrained", action="store_true")
    a = ap.parse_args(argv)
    levels = tuple((s.split(":")[0], float(s.split(":")[1])) for s in a.levels)
    print(build_zoo(a.out, tuple(a.imgsz), levels, use_baseline=not a.untrained))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    sys.exit(main())
