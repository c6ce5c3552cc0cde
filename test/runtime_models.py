"""Tiny real ONNX detection models (Ultralytics output layout) for runtime/backend tests."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import onnx
import torch
from torch import nn

from sparse_perception.runtime.zoo import sha256_file, write_manifest

NAMES = ("Car", "Pedestrian", "Cyclist")


class TinyDet(nn.Module):
    """Conv stride 32 -> (1, 4+nc, N); boxes from a sigmoid, scaled to network pixels."""

    def __init__(self, width: int = 8, nc: int = 3, seed: int = 0, imgsz: tuple[int, int] = (384, 1248)) -> None:
        super().__init__()
        h, w = imgsz
        self.register_buffer("scale", torch.tensor([w, h, w / 4.0, h / 4.0]).view(1, 4, 1))
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 4, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 8, 1), nn.ReLU(),
                                  nn.Conv2d(width, 4 + nc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x).flatten(2).sigmoid()
        return torch.cat([y[:, :4] * self.scale, y[:, 4:]], 1)


def export_tiny(path: Path, width: int = 8, imgsz: tuple[int, int] = (384, 1248), dynamic: bool = False,
                names: tuple[str, ...] = NAMES, seed: int = 0) -> Path:
    """Export a :class:`TinyDet` to ONNX with Ultralytics-style ``names`` metadata."""
    model = TinyDet(width, len(names), seed, imgsz).eval()
    x = torch.zeros(1, 3, *imgsz)
    kw = {"dynamic_axes": {"images": {2: "h", 3: "w"}, "output0": {2: "n"}}} if dynamic else {}
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["output0"], opset_version=17,
                      dynamo=False, **kw)
    m = onnx.load(str(path))
    entry = m.metadata_props.add()
    entry.key, entry.value = "names", repr(dict(enumerate(names)))
    onnx.save(m, str(path))
    return path


def tiny_zoo(root: Path, widths: dict[str, tuple[float, int]] | None = None) -> Path:
    """A manifest with one tiny fp32 ONNX per level (level -> (sparsity, width))."""
    widths = widths or {"dense": (0.0, 16), "s50": (0.5, 8), "s75": (0.75, 4)}
    now = datetime.now(timezone.utc).isoformat()
    arts = []
    for i, (lv, (sp, w)) in enumerate(widths.items()):
        (root / lv).mkdir(parents=True, exist_ok=True)
        p = export_tiny(root / lv / "model.onnx", w, seed=i)
        arts.append({"level": lv, "sparsity": sp, "precision": "fp32", "backend": "onnxruntime",
                     "path": f"{lv}/model.onnx", "sha256": sha256_file(p), "size_bytes": p.stat().st_size,
                     "input_shape": [1, 3, 384, 1248], "class_names": list(NAMES), "selected": True,
                     "map50_95": None, "map50": None, "created": now})
    return write_manifest(root / "manifest.json", {"schema_version": 1, "created": now, "model_family": "tiny",
                                                   "class_names": list(NAMES), "artifacts": arts})
