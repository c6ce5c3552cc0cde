"""``pruning-tools``: entry point of the offline pipeline.

Each subcommand lives in its own module with a ``main(argv) -> int``; this file only
dispatches, so ``pruning-tools kitti ...`` never pays for importing torch.
"""
from __future__ import annotations

import os
import sys

from sparse_perception.cli import dispatch

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "kitti": ("pruning_tools.data.cli", "KITTI I/O: generate scenes, convert to YOLO, write rosbag2"),
    "train-baseline": ("pruning_tools.train.baseline", "train/fine-tune the dense baseline on a KITTI-format dataset"),
    "import-model": ("pruning_tools.train.import_model", "convert an Ultralytics .pt (v5u/v8/11) into the project's weights-only format"),
    "evaluate": ("pruning_tools.train.evaluate", "KITTI-aware AP of a checkpoint, ONNX model or zoo level on real/generated frames"),
    "prune": ("pruning_tools.pipeline.cli", "three-stage structured pruning (--config FILE)"),
    "export": ("pruning_tools.quant.export", "quantise and export a prune run into an engine zoo"),
    "train-policy": ("pruning_tools.train.policy", "train the condition-driven sparsity policy on a zoo"),
    "federated": ("pruning_tools.federated.run", "federated pruning across a fleet of Flower clients (--config FILE --out RUN)"),
    "federated-groups": ("pruning_tools.federated.tailored", "one federated level per condition group + the global "
                         "level, for one zoo mapping conditions to levels (--config FILE --out RUN)"),
    "demo": ("pruning_tools.demo.run", "the whole pipeline and the live node end to end, with a report"),
}


def set_offline_env() -> None:
    # Ultralytics reads these at import time: never download, install or phone home.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")


def usage() -> str:
    lines = ["usage: pruning-tools COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `pruning-tools COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return dispatch("pruning-tools", COMMANDS, usage, argv, before_import=set_offline_env)


if __name__ == "__main__":
    sys.exit(main())
