#!/usr/bin/env python3
"""Bring your own YOLO, timed: an Ultralytics ``best.pt`` to a zoo served by the node (docs/byo-model.md).

Runs, as a user would, each command of docs/byo-model.md as its own process and times it:
``yolo train`` (Ultralytics' own trainer, one short epoch: a stand-in for the user's training),
``pruning-tools evaluate --trust-pickle``, ``pruning-tools import-model``, ``pruning-tools prune``
(a tiny config), ``pruning-tools export --quick`` and the node (start, configure, activate and the first
frame answered, over real DDS). Default data: COCO8 (real COCO images, 80 classes, no test split) from
``../shared``; any Ultralytics ``data.yaml`` works.

    .venv/bin/python bench/byo_walk.py --cfg yolov8n.yaml --json bench/results/byo_walk_yolov8n.json
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_report.py
from _report import machine_block, module_versions, write_result  # noqa: E402

COCO8 = REPO.parent / "shared" / "data" / "coco8"

NODE_PROBE = """
import sys, time
import numpy as np
from sparse_perception.tools.node_client import DetectorClient
from sparse_perception.tools.testing import managed_process, python_cmd
h, w = int(sys.argv[2]), int(sys.argv[3])
cmd = python_cmd("-m", "sparse_perception.node.detector_node", "--ros-args", "-p", f"engine_manifest:={sys.argv[1]}",
                 "-p", "autostart:=true", "-p", "image_reliability:=reliable")
with managed_process(cmd) as node:
    c = DetectorClient(image_topic="image_raw")
    try:
        ok = c.wait_ready(120, shape=(h, w))
    finally:
        c.close()
    if not ok:
        sys.exit("node did not answer: " + node.output()[-2000:])
print("node answered a frame")
"""


def _run(steps: list[dict], name: str, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    steps.append({"step": name, "command": " ".join(cmd), "wall_s": round(time.monotonic() - t0, 1),
                  "rc": res.returncode})
    print(f"{name}: {steps[-1]['wall_s']} s (rc {res.returncode})", flush=True)
    if res.returncode != 0:
        raise SystemExit(f"{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="yolov8n.yaml", help="Ultralytics model YAML to train (yolov8n.yaml, yolo11n.yaml)")
    p.add_argument("--data", type=Path, default=COCO8, help="Ultralytics dataset folder with a data.yaml (default COCO8)")
    p.add_argument("--imgsz", type=int, default=128, help="square input size for every step")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "byo_walk.json")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    a = p.parse_args(argv)
    if not a.data.is_dir():
        print(f"byo_walk: {a.data} not found (COCO8 lives in ../shared)", file=sys.stderr)
        return 2
    work = a.keep or Path(tempfile.mkdtemp(prefix="byo_walk_"))
    work.mkdir(parents=True, exist_ok=True)
    import yaml

    data = work / "data"
    if not data.exists():
        shutil.copytree(a.data, data)
    y = next(data.glob("*.yaml"))
    cfg = yaml.safe_load(y.read_text())
    cfg["path"] = str(data)
    (data / "data.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(work / "ulcfg"),
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    py, s = sys.executable, str(a.imgsz)
    tool = [py, "-m", "pruning_tools.cli"]
    steps: list[dict] = []
    yolo = shutil.which("yolo", path=str(Path(py).parent)) or "yolo"
    _run(steps, "yolo train (1 epoch)", [yolo, "train", f"model={a.cfg}", f"data={data / 'data.yaml'}", "epochs=1",
                                         f"imgsz={s}", "batch=4", "workers=0", "device=cpu", f"project={work}",
                                         "name=ul", "exist_ok=True", "plots=False", "pretrained=False"], env)
    best = work / "ul" / "weights" / "best.pt"
    _run(steps, "evaluate best.pt", tool + ["evaluate", "--model", str(best), "--trust-pickle", "--data", str(data),
                                            "--split", "val", "--imgsz", s, s, "--no-progress"], env)
    _run(steps, "import-model", tool + ["import-model", str(best), "--out", str(work / "model.pt"), "--trust-pickle"],
         env)
    pcfg = {"name": "byo", "levels": [0.5], "round_to": 8, "trials": 1, "methods": ["uniform", "importance"],
            "data": {"dataset": str(data), "imgsz": [a.imgsz, a.imgsz], "val_images": 4, "test_images": 4},
            "importance": {"batches": 2, "batch": 4}, "finetune": {"prune_steps": 4, "steps_per_prune": 2,
                                                                    "final_steps": 8, "batch": 4, "crop_width": None},
            "latency": {"runs": 20, "warmup": 2}}
    (work / "prune.yaml").write_text(yaml.safe_dump(pcfg))
    _run(steps, "prune (tiny config)", tool + ["prune", "--config", str(work / "prune.yaml"), "--out", str(work / "run"),
                                               "--baseline", str(work / "model.pt"), "--no-progress"], env)
    _run(steps, "export --quick", tool + ["export", "--run", str(work / "run"), "--zoo", str(work / "zoo"), "--quick",
                                          "--no-progress", "--overwrite"], env)
    _run(steps, "node: start, activate, first frame", [py, "-c", NODE_PROBE, str(work / "zoo" / "manifest.json"), s, s],
         env)
    result = {"bench": "byo_walk", "cfg": a.cfg, "data": str(a.data), "imgsz": a.imgsz, "steps": steps,
              "note": "each step its own process, timed end to end on this machine (shared cores: under contention)",
              "machine": machine_block(), "versions": module_versions("torch", "ultralytics", "onnxruntime")}
    write_result(a.json, result, "\n".join(f"{st['step']}: {st['wall_s']} s" for st in steps) + f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
