"""``pruning-tools import-model``: convert a user's Ultralytics ``.pt`` once into this project's format.

An Ultralytics ``best.pt`` (YOLOv5u, YOLOv8 or YOLO11, any class count) is a pickle: loading it can run
code. This command unpickles it once (only with ``--trust-pickle``) and writes a ``weights_only``
checkpoint recording the source file name, its SHA-256, the family and the class names; every other
command then loads the result without unpickling.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pruning-tools import-model",
                                description="Convert an Ultralytics .pt (YOLOv5u/YOLOv8/YOLO11) into the project's "
                                            "weights-only checkpoint format.")
    p.add_argument("src", type=Path, help="Ultralytics checkpoint, e.g. runs/detect/train/weights/best.pt")
    p.add_argument("--out", type=Path, required=True, help="project checkpoint to write (.pt)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling SRC (it can run code: trusted files only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.out.suffix != ".pt":
        print(f"pruning-tools import-model: --out {args.out} must end in .pt", file=sys.stderr)
        return 2
    from pruning_tools.ultralytics_adapter import AdapterError, import_model

    try:
        meta = import_model(args.src, args.out, trust_pickle=args.trust_pickle)
    except (OSError, ValueError, AdapterError) as exc:
        print(f"pruning-tools import-model: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), **{k: meta[k] for k in ("source", "source_sha256", "family", "nc")},
                      "class_names": meta["class_names"][:10] + (["..."] if meta["nc"] > 10 else [])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
