"""What machine measured a figure: CPU model, cores, load, GPU, package versions.

One place for the ``machine`` block that every benchmark JSON, the engine manifest's latency
``device`` and the demo report carry, so figures from different runs can be compared honestly.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions a figure usually depends on.
DEFAULT_PACKAGES = ("numpy", "onnxruntime", "onnx", "torch", "torch-pruning", "ultralytics", "opencv-python-headless",
                    "stable-baselines3", "ros-rclpy")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform`` fallback elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu_name() -> str | None:
    """Name of the first CUDA GPU torch sees, if torch is importable and one is present."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA set-up means "no usable GPU" here
        return None


def machine_info(packages: Sequence[str] = DEFAULT_PACKAGES, gpu: bool = False) -> dict[str, Any]:
    """The ``machine`` block: platform, Python, CPU model, cores (and the ones this process may use),
    load average, package versions; the GPU's name when ``gpu`` is true."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": package_versions(packages),
    }
    if gpu:
        info["gpu"] = gpu_name()
    return info
