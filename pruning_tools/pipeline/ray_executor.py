"""Ray execution of ``pruning-tools prune --ray ADDRESS``: units and reward evaluations across a cluster.

The pipeline's unit of work is one (method, level, trial) (:meth:`Pipeline.run_unit`); inside a
``full`` unit, stage 2 evaluates its rewards in batches (:meth:`RewardProxy.prefetch`). With an
executor from this module:

* the dense baseline checkpoint and the data slices the units read (the training images used, the
  whole validation split, the test images used) are put into Ray's object store **once**; each node
  unpacks them once into ``<tmp>/sp_ray_ctx_<sha256>`` (kept, so a rerun reuses it), and each worker
  process loads them once;
* every pending unit is a Ray task (1 CPU, torch 1 thread) that runs in a scratch folder and returns
  its result and files; the driver writes them into the run folder as units finish, ``result.json``
  last, so a rerun skips finished units wherever they ran;
* each reward evaluation of a batch is a Ray task (1 CPU); a unit waiting for its batch gives its
  CPU back to Ray meanwhile;
* a task whose worker or node dies is retried (``max_retries``) on another worker;
* the driver prints units done / running / pending and reward evaluations done across the cluster.

Nothing else imports Ray: without ``--ray`` the pipeline never loads it.

ADDRESS is ``local`` (start a Ray on this machine with its cores), ``auto`` (join the cluster named
by ``RAY_ADDRESS``) or ``HOST:PORT`` of a head node. Clusters with token authentication need
``RAY_AUTH_MODE=token`` and the token (``RAY_AUTH_TOKEN``) in the driver's environment too. For a
loopback address (and ``local``) the driver also uses loopback for its own node address.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from pruning_tools.pipeline.prune import Pipeline, Unit, level_dir, unit_tag
from pruning_tools.search.proxy import ProxySpec
from pruning_tools.search.session import Inputs
from pruning_tools.pipeline.config import PruneConfig, config_from_dict, config_to_dict

#: retries of a task whose worker process or node dies
MAX_RETRIES = 3
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_address(address: str) -> tuple[str, str | None]:
    """Validate ``--ray ADDRESS``.

    :return: (address for ``ray.init``, host or ``None`` for ``local``).
    :raises ValueError: naming what is wrong.
    """
    a = (address or "").strip()
    if a == "local":
        return a, None
    if a == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if not env:
            raise ValueError("--ray auto joins the cluster named by RAY_ADDRESS, which is not set")
        if env in ("auto", "local"):
            raise ValueError(f"RAY_ADDRESS must be HOST:PORT of a head node for --ray auto, got {env!r}")
        return a, parse_address(env)[1]
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray ADDRESS must be 'local', 'auto' or HOST:PORT, got {address!r}")
    return a, host.strip("[]")


def _is_loopback(host: str | None) -> bool:
    return host is None or host in LOOPBACK or host.startswith("127.")


# --------------------------------------------------------------------------------- packing
def pack_dataset(data: Path, cfg: PruneConfig) -> dict[str, bytes]:
    """The files the units read: first ``train_images`` training images, the whole val split, the
    first ``test_images`` test images, their labels and the class names (``data.yaml``)."""
    from pruning_tools.data.yolo import IMG_EXTS, report_split, resolve_split_dir

    caps = {"train": cfg.data.train_images, "val": None, "test": cfg.data.test_images}
    if report_split(data) != "test":
        del caps["test"]  # no test split: the units report on val (Pipeline.measure)
    files: dict[str, bytes] = {}
    for split, cap in caps.items():
        img_dir, lbl_dir = resolve_split_dir(data, split)
        imgs = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMG_EXTS)
        for p in imgs[:cap] if cap is not None else imgs:
            files[f"images/{split}/{p.name}"] = p.read_bytes()
            lab = lbl_dir / f"{p.stem}.txt"
            if lab.is_file():
                files[f"labels/{split}/{lab.name}"] = lab.read_bytes()
    yml = data if data.is_file() else data / "data.yaml"
    raw = yaml.safe_load(yml.read_text()) if yml.is_file() else {}
    names = (raw or {}).get("names")
    if names is not None:
        files["data.yaml"] = yaml.safe_dump({"names": names, "nc": len(names)}).encode()
    return files


def pack_dir(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], root: Path, last: str | None = None) -> None:
    """Write ``files`` under ``root`` atomically, the one named ``last`` after all others."""
    for rel in sorted(files, key=lambda r: (r == last, r)):
        path = root / rel
        if root.resolve() not in path.resolve().parents:
            raise ValueError(f"refusing to write outside {root}: {rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(files[rel])
        os.replace(tmp, path)


# --------------------------------------------------------------------------------- worker side
_CONTEXTS: dict[str, tuple[Pipeline, Inputs]] = {}


def worker_context(box: list[Any]) -> tuple[Pipeline, Inputs]:
    """This worker process's pipeline and inputs for the shared context ``box = [ref, key]``.

    The context is unpacked once per node into ``<tmp>/sp_ray_ctx_<key>`` (``key``: sha256 of its
    content, so reruns reuse it) and loaded once per worker process.
    """
    import ray
    import torch

    ref, key = box
    if key not in _CONTEXTS:
        root = Path(tempfile.gettempdir()) / f"sp_ray_ctx_{key}"
        if not (root / "context.json").is_file():
            ctx = ray.get(ref)
            tmp = Path(tempfile.mkdtemp(prefix=f".sp_ray_ctx_{key}_", dir=root.parent))
            unpack(ctx["data"], tmp / "data")
            (tmp / ctx["baseline_name"]).write_bytes(ctx["baseline"])
            meta = {"config": ctx["config"], "baseline_name": ctx["baseline_name"]}
            (tmp / "context.json").write_text(json.dumps(meta))
            try:
                os.rename(tmp, root)
            except OSError:  # another worker of this node unpacked it first
                shutil.rmtree(tmp, ignore_errors=True)
        meta = json.loads((root / "context.json").read_text())
        cfg = config_from_dict(meta["config"])
        cfg = dataclasses.replace(cfg, baseline=str(root / meta["baseline_name"]), threads=1,
                                  data=dataclasses.replace(cfg.data, dataset=str(root / "data")))
        pipe = Pipeline(cfg, Path(tempfile.mkdtemp(prefix="run_", dir=root)), progress=False)
        _CONTEXTS[key] = (pipe, pipe.prepare())
    torch.set_num_threads(1)
    return _CONTEXTS[key]


class _WorkerBatches:
    """Executor seen by a unit running on a worker: reward batches become sibling Ray tasks."""

    def __init__(self, box: list[Any], progress: Any) -> None:
        self.box, self.progress = box, progress

    def batch_evaluator(self, spec: ProxySpec) -> Callable[[list[list[float]]], list[float]]:
        return _batch_evaluator(self.box, self.progress, spec)


def _batch_evaluator(box: list[Any], progress: Any, spec: ProxySpec) -> Callable[[list[list[float]]], list[float]]:
    import ray

    def run(batch: list[list[float]]) -> list[float]:
        task = _evaluate_task()
        return [float(v) for v in ray.get([task.remote(box, spec, r, progress) for r in batch])]

    return run


_PROXIES: dict[tuple[str, ProxySpec], Any] = {}


def _evaluate(box: list[Any], spec: ProxySpec, ratios: list[float], progress: Any) -> float:
    pipe, inputs = worker_context(box)
    key = (box[1], spec)
    if key not in _PROXIES:  # one proxy per spec and worker process: its channel masks are built once
        _PROXIES[key] = pipe.session(inputs).reward_proxy(spec, batched=False)
    value = float(_PROXIES[key](ratios))
    progress.add.remote("evaluations", 1)
    return value


def _run_unit(box: list[Any], unit: Unit, stage1: dict[str, Any] | None, dense_res: dict[str, Any],
              progress: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    import ray

    pipe, inputs = worker_context(box)
    pipe.log(f"unit {unit_tag(unit, pipe.cfg.target_metric)} started on node "
             f"{ray.get_runtime_context().get_node_id()}")
    scratch = Path(tempfile.mkdtemp(prefix="sp_ray_unit_"))
    try:
        upipe = Pipeline(pipe.cfg, scratch, progress=False, executor=_WorkerBatches(box, progress))
        upipe.baseline_path = pipe.baseline_path
        rec = upipe.run_unit(inputs, *unit, stage1, dense_res)
        return rec, pack_dir(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_TASKS: dict[str, Any] = {}


def _evaluate_task() -> Any:
    import ray

    if "evaluate" not in _TASKS:
        _TASKS["evaluate"] = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_evaluate)
    return _TASKS["evaluate"]


def _unit_task() -> Any:
    import ray

    if "unit" not in _TASKS:
        _TASKS["unit"] = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_run_unit)
    return _TASKS["unit"]


class _Progress:
    """Counters shared by the driver and every task (a Ray actor)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def get(self) -> dict[str, int]:
        return dict(self.counts)


# --------------------------------------------------------------------------------- driver side
class RayExecutor:
    """Runs prune units and reward-evaluation batches on Ray (use as a context manager).

    :param address: ``local``, ``auto`` or ``HOST:PORT`` (see the module docstring).
    :param num_cpus: CPUs of the Ray started by ``local`` (default: this machine's cores).
    :param report_s: seconds between progress lines.
    """

    def __init__(self, address: str, num_cpus: int | None = None, report_s: float = 30.0) -> None:
        self.address, self.host = parse_address(address)
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
        self.num_cpus = num_cpus
        self.report_s = float(report_s)
        self.progress: Any = None
        self._box: list[Any] | None = None
        self._box_key: tuple[int, int] | None = None

    def __enter__(self) -> RayExecutor:
        if _is_loopback(self.host):
            # Ray otherwise advertises the network interface's address even for a cluster on loopback
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        kw: dict[str, Any] = {"include_dashboard": False} if self.address == "local" else {}
        if self.address == "local":
            kw["num_cpus"] = self.num_cpus or os.cpu_count() or 1
        try:
            ray.init(address=self.address, **kw)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise ConnectionError(f"cannot reach Ray at {self.address!r}: {exc}") from exc
        try:
            self.check_nodes()
            # the counters live on the driver's node: a worker node that dies must not take them along
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            self.progress = ray.remote(num_cpus=0, max_restarts=-1)(_Progress).options(
                scheduling_strategy=here).remote()
        except Exception:
            ray.shutdown()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        self._box = None
        ray.shutdown()

    def nodes(self) -> list[dict[str, Any]]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def check_nodes(self) -> None:
        """A cluster reached over loopback must run entirely on loopback (no node on another address)."""
        nodes = self.nodes()
        if not nodes:
            raise ConnectionError(f"Ray at {self.address!r} has no live node")
        if _is_loopback(self.host):
            bad = sorted({n["NodeManagerAddress"] for n in nodes if not _is_loopback(n["NodeManagerAddress"])})
            if bad:
                raise ConnectionError(f"Ray at {self.address!r} was reached over loopback but nodes advertise {bad}; "
                                      "start every node with a loopback node IP address")

    def cluster_line(self) -> str:
        nodes = self.nodes()
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
        return f"{len(nodes)} node(s), {cpus:g} CPU(s)"

    def share(self, pipe: Pipeline, inputs: Inputs) -> list[Any]:
        """Put the baseline and the data slices into the object store once; returns the boxed reference."""
        import ray

        key = (id(pipe), id(inputs))
        if self._box is None or self._box_key != key:
            ctx = {"config": config_to_dict(pipe.cfg), "baseline": Path(pipe.baseline_path).read_bytes(),
                   "baseline_name": Path(pipe.baseline_path).name, "data": pack_dataset(inputs.data, pipe.cfg)}
            h = hashlib.sha256(json.dumps(ctx["config"], sort_keys=True).encode() + ctx["baseline"])
            for rel in sorted(ctx["data"]):
                h.update(rel.encode() + b"\0" + ctx["data"][rel])
            self._box, self._box_key = [ray.put(ctx), h.hexdigest()[:24]], key
        return self._box

    def batch_evaluator(self, spec: ProxySpec) -> Callable[[list[list[float]]], list[float]]:
        if self._box is None:
            raise RuntimeError("RayExecutor.share(pipeline, inputs) must come before batch evaluations")
        return _batch_evaluator(self._box, self.progress, spec)

    def counts(self) -> dict[str, int]:
        """Progress counters; empty if they cannot be read (progress display only, never fatal)."""
        import ray

        try:
            return ray.get(self.progress.get.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            return {}

    def run_units(self, pipe: Pipeline, inputs: Inputs, units: list[Unit],
                  stage1: dict[int, dict[str, Any] | None],
                  dense_res: dict[str, Any]) -> dict[Unit, dict[str, Any]]:
        """Run ``units`` as Ray tasks; each finished unit's files land in ``pipe.run`` as it finishes."""
        import ray

        box = self.share(pipe, inputs)
        pipe.log(f"ray: {len(units)} unit(s) on {self.cluster_line()}")
        task = _unit_task()
        futures = {task.remote(box, u, stage1[u[2]], dense_res, self.progress): u for u in units}
        done: dict[Unit, dict[str, Any]] = {}
        failed: list[str] = []
        last = time.monotonic()
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=self.report_s)
            for f in ready:
                u = futures.pop(f)
                name = unit_tag(u, pipe.cfg.target_metric)
                try:
                    rec, files = ray.get(f)
                except Exception as exc:  # noqa: BLE001 - the other units still finish and are kept
                    failed.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    pipe.log(f"ray: unit {name} failed: {exc}")
                    continue
                unpack(files, pipe.run, last=str(level_dir(Path(), *u, pipe.cfg.target_metric) / "result.json"))
                done[u] = rec
                pipe.log(f"{name}: mAP50-95 {rec['map50_95']:.4f} sparsity {rec['sparsity']:.3f} (ray)")
            if not ready or time.monotonic() - last >= self.report_s:
                c = self.counts()
                pipe.log(f"ray: units {len(done)}/{len(units)} done, {len(futures)} to go | reward evaluations "
                         f"{c.get('evaluations', '?')} done | {self.cluster_line()}")
                last = time.monotonic()
        c = self.counts()  # a closing line even when every unit finished before the first report
        pipe.log(f"ray: units {len(done)}/{len(units)} done | reward evaluations {c.get('evaluations', '?')} done | "
                 f"{self.cluster_line()}")
        if failed:
            raise RuntimeError(f"{len(failed)} unit(s) failed on Ray (finished ones are kept; rerun to retry): "
                               + "; ".join(failed))
        return done

