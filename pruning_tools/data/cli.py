"""``pruning-tools kitti``: generate scenes, convert to YOLO, write rosbag2.

Examples::

    pruning-tools kitti generate --out data/kitti_gen --frames 200 --seed 0
    pruning-tools kitti generate --out data/seq --frames 300 --sequence --conditions day_clear,night_fog
    pruning-tools kitti convert --kitti-root data/kitti_gen --out data/yolo --classes config/classes.yaml
    pruning-tools kitti to-bag --raw-drive data/seq/raw/2011_09_26/2011_09_26_drive_0001_sync --out data/seq_bag
    pruning-tools kitti to-bag --tracking ../shared/data/kitti_tracking --sequence 0000 --out data/trk0000_bag
    pruning-tools kitti convert --tracking ../shared/data/kitti_tracking --sequence 0000 --out data/trk0000_yolo

Bad input (missing files, malformed labels, existing output, ...) prints one line naming the
file and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions train,val,test, got {text!r}")
    return vals  # type: ignore[return-value]


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _stamp(text: str) -> int:
    from pruning_tools.data.kitti_io import parse_timestamp

    try:
        return parse_timestamp(text if "." in text else text + ".0")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``kitti`` argument parser (subcommands ``generate``, ``convert``, ``to-bag``)."""
    p = argparse.ArgumentParser(prog="pruning-tools kitti", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write procedurally generated KITTI-format scenes (object + raw layouts)")
    g.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    g.add_argument("--frames", required=True, type=int, help="number of frames")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--sequence", action="store_true", help="a driving sequence: condition changes per segment")
    g.add_argument("--conditions", type=_keys, default=None, help="comma-separated keys, e.g. day_clear,night_fog")
    g.add_argument("--segment-frames", type=int, default=50, help="frames per condition segment (--sequence)")
    g.add_argument("--timestamps", type=Path, default=None, help="real KITTI raw timestamps.txt to reuse")
    g.add_argument("--calib", type=Path, default=None, help="real KITTI raw calib_cam_to_cam.txt to reuse")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("convert", help="KITTI object layout -> Ultralytics YOLO dataset")
    csrc = c.add_mutually_exclusive_group(required=True)
    csrc.add_argument("--kitti-root", type=Path, help="folder with training/{image_2,label_2}")
    csrc.add_argument("--tracking", type=Path,
                      help="KITTI tracking root (training/{image_02,label_02}); with --sequence; split by time")
    c.add_argument("--sequence", default=None, help="with --tracking: the sequence, e.g. 0000")
    c.add_argument("--gap", type=int, default=5,
                   help="with --tracking: frames dropped between train, val and test (default 5)")
    c.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    c.add_argument("--classes", type=Path, default=None, help="class map YAML, e.g. '{Van: Car, Misc: null}'")
    c.add_argument("--split", type=_fractions, default=None,
                   help="train,val,test fractions (default 0.8,0.1,0.1 shuffled; with --tracking 0.7,0,0.3 by time)")
    c.add_argument("--split-file", type=Path, default=None, help="splits.json whose frames keep their split")
    c.add_argument("--seed", type=int, default=0, help="split shuffle seed (default 0)")
    c.add_argument("--min-height", type=float, default=0.0, help="drop boxes lower than this many pixels")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    b = sub.add_parser("to-bag", help="KITTI raw drive (or a folder of consecutive frames) -> rosbag2")
    bsrc = b.add_mutually_exclusive_group(required=True)
    bsrc.add_argument("--tracking", type=Path, help="KITTI tracking root (training/{image_02,label_02}); with --sequence")
    b.add_argument("--sequence", default=None, help="with --tracking: the sequence, e.g. 0000")
    b.add_argument("--timestamps", type=Path, default=None,
                   help="with --tracking: the raw drive's image_02/timestamps.txt (default: the root's one "
                        "raw/*/image_02/timestamps.txt with as many lines as frames)")
    bsrc.add_argument("--raw-drive", type=Path,
                      help="drive folder <date>/<date>_drive_XXXX_sync, or (with --rate) a folder of consecutive frames "
                        "without timestamps (holding image_02/data, or the PNGs themselves)")
    b.add_argument("--rate", type=float, default=None,
                   help="frame rate in Hz for frames without timestamps.txt (with --tracking: instead of real times)")
    b.add_argument("--start", type=_stamp, default=None,
                   help="first frame's time with --rate, e.g. '2011-09-26 13:02:25' (default: midnight UTC of the "
                        "YYYY_MM_DD folder)")
    b.add_argument("--out", required=True, type=Path, help="bag folder to create (must not exist)")
    b.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage plugin (default mcap)")
    b.add_argument("--camera", choices=("00", "01", "02", "03"), default="02", help="camera (default 02)")
    b.add_argument("--calib", type=Path, default=None,
                   help="calib_cam_to_cam.txt or a day's calibration folder (default: the date folder)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _run(args: argparse.Namespace) -> str:
    progress = not args.no_progress
    if args.command == "generate":
        from pruning_tools.data.generator import generate_dataset

        drive = generate_dataset(args.out, args.frames, args.seed, args.sequence, conditions=args.conditions,
                                 segment_frames=args.segment_frames, timestamps=args.timestamps,
                                 calib=args.calib, progress=progress)
        return f"wrote {args.frames} frames to {args.out} (raw drive: {drive})"
    if args.command == "convert":
        from pruning_tools.data.convert import convert_kitti, convert_tracking, load_class_map

        classes = load_class_map(args.classes) if args.classes is not None else None
        if args.tracking is not None:
            if args.sequence is None:
                raise ValueError("--tracking needs --sequence SSSS")
            if args.split_file is not None:
                raise ValueError("--split-file is for --kitti-root; a tracking sequence is split by time (--split)")
            out = convert_tracking(args.tracking, args.sequence, args.out, classes=classes,
                                   split=args.split or (0.7, 0.0, 0.3), gap=args.gap, min_height_px=args.min_height,
                                   progress=progress)
            return f"wrote YOLO dataset {out} (data.yaml, splits.json; split by time)"
        if args.sequence is not None:
            raise ValueError("--sequence goes with --tracking")
        out = convert_kitti(args.kitti_root, args.out, classes=classes, split=args.split or (0.8, 0.1, 0.1),
                            split_file=args.split_file, seed=args.seed, min_height_px=args.min_height,
                            progress=progress)
        return f"wrote YOLO dataset {out} (data.yaml, splits.json)"
    from pruning_tools.data.bag import raw_drive_to_bag, tracking_to_bag

    if args.tracking is not None:
        if args.sequence is None:
            raise ValueError("--tracking needs --sequence SSSS")
        if args.timestamps is not None and args.rate is not None:
            raise ValueError("give --timestamps or --rate, not both")
        out = tracking_to_bag(args.tracking, args.sequence, args.out, storage=args.storage, timestamps=args.timestamps,
                              rate=args.rate, start_ns=args.start or 0, calib=args.calib, progress=progress)
        return f"wrote rosbag2 {out} ({args.storage})"
    if args.sequence is not None or args.timestamps is not None:
        raise ValueError("--sequence and --timestamps go with --tracking")
    out = raw_drive_to_bag(args.raw_drive, args.out, storage=args.storage, camera=args.camera,
                           progress=progress, calib=args.calib, rate=args.rate, start_ns=args.start)
    return f"wrote rosbag2 {out} ({args.storage})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pruning-tools kitti``; returns the exit status (2 on bad input, no traceback).

    :param argv: arguments after ``kitti``; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    try:
        msg = _run(args)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"pruning-tools kitti {args.command}: error: {text}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"pruning-tools kitti {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
