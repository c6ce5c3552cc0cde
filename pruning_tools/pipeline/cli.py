"""``pruning-tools prune --config FILE``: run (or resume) a prune run, in this process or on Ray.

The run itself is :class:`pruning_tools.pipeline.prune.Pipeline` (its module docstring lists the run
folder's files); ``--ray ADDRESS`` hands its units to :class:`pruning_tools.pipeline.ray_executor.RayExecutor`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pruning_tools.pipeline.config import ConfigError, load_config
from pruning_tools.pipeline.prune import Pipeline, next_run_dir
from pruning_tools.train.evaluate import add_real_eval_args

DESCRIPTION = "``pruning-tools prune --config FILE``: the three-stage pruning pipeline and its comparison table."


def _project_baseline(path: Path, run: Path, trust_pickle: bool) -> Path:
    """``path`` itself when it is a project checkpoint; an Ultralytics ``.pt`` (only with ``trust_pickle``)
    converted once into ``run/baseline_imported.pt``."""
    from pruning_tools.ultralytics_adapter import AdapterError, import_model, load_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"--baseline {path}: not found")
    try:
        load_checkpoint(path)
        return path
    except AdapterError:
        dst = run / "baseline_imported.pt"
        meta = import_model(path, dst, trust_pickle=trust_pickle)
        print(f"imported {path} ({meta['family']}, {meta['nc']} classes) -> {dst}", flush=True)
        return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pruning-tools prune", description=DESCRIPTION)
    p.add_argument("--config", type=Path, required=True, help="YAML config (pruning_tools/configs/quick.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: config run_dir or runs/prune_<name>_<n>)")
    p.add_argument("--data", type=Path, default=None, help="override data.dataset")
    p.add_argument("--baseline", type=Path, default=None,
                   help="override the baseline checkpoint (project format, or an Ultralytics .pt with --trust-pickle)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling an Ultralytics --baseline .pt (trusted files only); it is converted once "
                        "into the run folder (as `pruning-tools import-model` does)")
    add_real_eval_args(p, "columns")
    p.add_argument("--mix", nargs=2, action="append", default=[], metavar=("DIR", "REPEATS"),
                   help="also fine-tune on this YOLO dataset's train split, repeated REPEATS times per epoch "
                        "(e.g. the baseline's real training frames); may be given again; not with --ray")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the units and reward evaluations on Ray: 'local' (a Ray on this machine's cores), "
                        "'auto' (the cluster named by RAY_ADDRESS) or HOST:PORT of a head node")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
        if a.data is not None or a.baseline is not None:
            if a.data is not None:
                cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=str(a.data)))
            if a.baseline is not None:
                cfg = dataclasses.replace(cfg, baseline=str(a.baseline))
        run = a.out or (Path(cfg.run_dir) if cfg.run_dir else next_run_dir(Path("runs"), f"prune_{cfg.name}"))
        if a.baseline is not None:
            cfg = dataclasses.replace(cfg, baseline=str(_project_baseline(a.baseline, run, a.trust_pickle)))
        mix = [(Path(d), int(r)) for d, r in a.mix]
        if any(r < 1 for _, r in mix):
            raise ValueError("--mix REPEATS must be >= 1")
        if mix and a.ray is not None:
            raise ValueError("--mix is not supported with --ray yet (workers read only the packed dataset)")
        real = {"real_eval": a.real_eval, "real_split_file": a.real_split_file, "real_split": a.real_split}
        if a.ray is None:
            Pipeline(cfg, run, progress=not a.no_progress, mix=mix, **real).run_all()
        else:
            from pruning_tools.pipeline.ray_executor import RayExecutor  # Ray is imported only with --ray

            with RayExecutor(a.ray) as ex:
                Pipeline(cfg, run, progress=not a.no_progress, executor=ex, **real).run_all()
    except (ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"pruning-tools prune: error: {exc}", file=sys.stderr)
        return 2
    print(f"run folder: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
