"""A federated job on disk (``RUN/job.json``: the config and the run folder, what the ServerApp and every
ClientApp read) and the names of the custom Flower message types."""
from __future__ import annotations

import json
from pathlib import Path

from pruning_tools.data.files import write_json
from pruning_tools.federated.config import FederatedConfig, FederatedConfigError

#: message types of the custom steps (Flower's ``query`` with an action)
STAGE1 = "query.stage1"
ROLL_CALL = "query.rollcall"


def write_job(cfg: FederatedConfig, run_dir: Path, progress: bool) -> Path:
    """``RUN/job.json``: what the ServerApp and the ClientApps read (config + run folder).

    :raises FederatedConfigError: ``run_dir`` holds a job of another config (a resume must not mix them).
    """
    run_dir = Path(run_dir).resolve()
    job = run_dir / "job.json"
    if job.is_file():
        prev = json.loads(job.read_text()).get("config")
        if prev is not None and prev != cfg.to_dict():
            raise FederatedConfigError(f"{run_dir} holds a run of a different config; use another --out "
                                       f"(or delete the folder)")
    write_json(job, {"config": cfg.to_dict(), "run_dir": str(run_dir), "progress": progress})
    return job


def read_job(path: str | Path) -> tuple[FederatedConfig, Path, bool]:
    """``RUN/job.json`` -> (config, run folder, progress)."""
    d = json.loads(Path(path).read_text())
    return FederatedConfig.from_dict(d["config"]), Path(d["run_dir"]), bool(d.get("progress", False))
