"""Levels tailored to driving environments (issue 25 item 3): one federated level per condition group plus the
single global level, ready for ``pruning-tools export`` into one zoo whose manifest maps conditions to levels.

::

    pruning-tools federated-groups --config pruning_tools/configs/federated_groups.yaml --out RUN [--ray A] [--no-progress]
    pruning-tools export --run RUN --zoo ZOO --quick          # one zoo: dense, fed_global, fed_<group>...
    detector_node ... -p engine_manifest:=ZOO/manifest.json -p policy_path:=manifest -p policy_mode:=auto

The vehicles of a fleet config (:mod:`pruning_tools.federated.config`, plus an optional ``groups:
{name: [client ids]}``) are grouped by condition mix — given, or by the regime their mix is heaviest
in (:func:`auto_groups`: ``night`` = any ``night_*``, ``fog`` = ``day_fog``/``dusk_fog``, else ``day``).
Then, each a real Flower job on the simulation engine (:func:`pruning_tools.federated.run.run_simulation_job`):

* the **global** level: every vehicle together (``RUN/global``);
* one level **per group**: only that group's vehicles, so its stage-1 budgets come from their
  gradient-L1 sums alone and its FedAvg/FedProx fine-tuning from their data alone (``RUN/groups/<name>``).

Every level has the config's sparsity target and, by default (``group_budget: equal_total``), the same
total stage-1 and fine-tune batches as the global job: a group of 2 of 6 vehicles runs 3x the
per-vehicle batches (``per_vehicle``: the global job's per-vehicle batches, so fewer in all).
Each group's held-out frames are generated scenes of that group's condition mix from a seed no vehicle uses (``RUN/heldout/<name>``, the test half;
they train nothing); the group's own level and the global level are both evaluated there
(:data:`TARGET_GAIN_POINTS`). ``RUN/summary.json`` is what ``export`` reads: the dense baseline, the
levels (method ``federated``, names ``fed_global``, ``fed_<group>``) and the ``conditions`` block —
each condition key that any group holds goes to the group holding the largest share of it, every
other condition to the global level (``default``). ``RUN/tailored.json`` holds the measured figures.
Rerunning resumes (each Flower job resumes after its last finished round; finished held-out sets are
reused; the evaluations run again).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from pruning_tools.data.files import write_json
from pruning_tools.federated.config import ClientSpec, FederatedConfig, FederatedConfigError, read_config_mapping

#: the issue's target: each group's own level beats the global level on the group's held-out data by this many points
TARGET_GAIN_POINTS = 1.0
GLOBAL_LEVEL = "fed_global"
#: held-out frames generated per group (split 0.1/0.45/0.45: the test half is evaluated)
HELDOUT_FRAMES = 60
HELDOUT_SPLIT = (0.1, 0.45, 0.45)


def regime(spec: ClientSpec) -> str:
    """``night``, ``fog`` or ``day``: the regime a vehicle's condition mix is heaviest in (ties: that order)."""
    mix = spec.condition_mix()
    night = sum(v for k, v in mix.items() if k.startswith("night_"))
    fog = sum(v for k, v in mix.items() if k.endswith("_fog") and not k.startswith("night_"))
    day = 1.0 - night - fog
    return max((("night", night), ("fog", fog), ("day", day)), key=lambda kv: kv[1])[0]


def auto_groups(cfg: FederatedConfig) -> dict[str, list[str]]:
    """Client ids by :func:`regime`, in config order."""
    out: dict[str, list[str]] = {}
    for c in cfg.clients:
        out.setdefault(regime(c), []).append(c.id)
    return out


def check_groups(cfg: FederatedConfig, groups: Mapping[str, Any]) -> dict[str, list[str]]:
    """Validate ``groups`` (name -> client ids): every client in exactly one group, at least 2 per group (a
    Flower fleet), names usable as level names.

    :raises FederatedConfigError: naming the group or client.
    """
    from sparse_perception.runtime.zoo import LEVEL_RE

    ids = [c.id for c in cfg.clients]
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    if not isinstance(groups, Mapping) or not groups:
        raise FederatedConfigError("groups must map group names to lists of client ids")
    for name, members in groups.items():
        if not isinstance(name, str) or not LEVEL_RE.fullmatch(f"fed_{name}") or name == "global":
            raise FederatedConfigError(f"groups: {name!r} cannot name a level (letters, digits, _ -; not 'global')")
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise FederatedConfigError(f"groups.{name}: a group is a fleet of its own, it needs at least 2 clients, "
                                       f"got {members!r}")
        for m in members:
            if m not in ids:
                raise FederatedConfigError(f"groups.{name}: {m!r} is not a client id ({ids})")
            if m in seen:
                raise FederatedConfigError(f"groups.{name}: client {m!r} is already in group {seen[m]!r}")
            seen[m] = name
        out[name] = [str(m) for m in members]
    missing = [i for i in ids if i not in seen]
    if missing:
        raise FederatedConfigError(f"groups: clients {missing} are in no group")
    if len(out) < 2:
        raise FederatedConfigError("groups: tailoring needs at least 2 groups (one group is the global level)")
    return out


#: ``group_budget`` values: ``equal_total`` — every level gets the global job's total stage-1 and fine-tune
#: batches (a group's vehicles each do ``fleet / group`` times the per-vehicle batches); ``per_vehicle`` —
#: every vehicle the same batches as in the global job (a group's level then sees fewer in all)
GROUP_BUDGETS = ("equal_total", "per_vehicle")


def group_config(cfg: FederatedConfig, name: str, members: list[str], budget: str = "equal_total") -> FederatedConfig:
    """The fleet config of one group: only its vehicles, the rest as the global job (no central baseline);
    ``budget`` (:data:`GROUP_BUDGETS`) sets their stage-1 and per-round fine-tune batches."""
    if budget not in GROUP_BUDGETS:
        raise FederatedConfigError(f"group_budget must be one of {', '.join(GROUP_BUDGETS)}, got {budget!r}")
    clients = tuple(cfg.client(m) for m in members)
    scale = len(cfg.clients) / len(clients) if budget == "equal_total" else 1.0
    return dataclasses.replace(cfg, name=f"{cfg.name}_{name}", clients=clients, central=False, fault=None,
                               min_clients=min(cfg.min_clients, len(clients)),
                               stage1_batches=max(1, round(cfg.stage1_batches * scale)),
                               local_steps=max(1, round(cfg.local_steps * scale)))


def group_mix(cfg: FederatedConfig, members: list[str]) -> dict[str, float]:
    """The group's condition mix: its vehicles' mixes, each vehicle weighted by its frames."""
    total = sum(cfg.client(m).frames for m in members)
    mix: dict[str, float] = {}
    for m in members:
        spec = cfg.client(m)
        for k, v in spec.condition_mix().items():
            mix[k] = mix.get(k, 0.0) + v * spec.frames / total
    return {k: round(v, 4) for k, v in mix.items()}


def condition_map(mixes: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """Condition key -> the level of the group holding the largest share of it (ties: the first group)."""
    out: dict[str, tuple[float, str]] = {}
    for name, mix in mixes.items():
        for k, v in mix.items():
            if k not in out or v > out[k][0]:
                out[k] = (v, f"fed_{name}")
    return {k: lv for k, (_, lv) in sorted(out.items())}


def heldout_set(cfg: FederatedConfig, name: str, members: list[str], root: Path, seed: int, frames: int,
                progress: bool) -> Path:
    """Generated held-out scenes of the group's condition mix (a seed no vehicle uses); reused when finished."""
    from pruning_tools.federated.data import generated_dataset

    conditions: list[str] = []
    for m in members:
        conditions += list(cfg.client(m).conditions)
    return generated_dataset(root, frames, seed, conditions, HELDOUT_SPLIT, progress, tag={"group": name})


def load_groups_config(path: str | Path) -> tuple[FederatedConfig, dict[str, list[str]] | None, int, str]:
    """A fleet YAML with optional ``groups: {name: [ids]}``, ``heldout_frames`` and ``group_budget``.

    :return: (config, groups or None, held-out frames per group, group budget).
    """
    data = read_config_mapping(path)
    groups = data.pop("groups", None)
    frames = data.pop("heldout_frames", HELDOUT_FRAMES)
    budget = data.pop("group_budget", "equal_total")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 10:
        raise FederatedConfigError(f"{path}: heldout_frames must be an integer >= 10, got {frames!r}")
    if budget not in GROUP_BUDGETS:
        raise FederatedConfigError(f"{path}: group_budget must be one of {', '.join(GROUP_BUDGETS)}, got {budget!r}")
    try:
        return FederatedConfig.from_dict(data), groups, frames, budget
    except FederatedConfigError as exc:
        raise FederatedConfigError(f"{path}: {exc}") from exc


def run_tailored(cfg: FederatedConfig, out: str | Path, groups: Mapping[str, Any] | None = None,
                 ray_address: str | None = None, progress: bool = True,
                 heldout_frames: int = HELDOUT_FRAMES, group_budget: str = "equal_total",
                 control: bool = False) -> dict[str, Any]:
    """The global level, one level per condition group, their held-out comparison and the export summary.

    :return: the dict written to ``out/tailored.json``: ``groups`` (each: clients, mix, level, ``heldout``
        with ``own`` / ``global`` / ``dense`` mAP and ``gain_points``), ``global``, ``conditions``, ``target``.
    :param control: also train a control global level (``RUN/control``): every vehicle, with the groups'
        per-vehicle batches (so more in all), evaluated on every group's held-out scenes — whether a group's
        gain comes from its conditions or from its vehicles' longer local fine-tuning.
    :raises FederatedConfigError: bad groups. :raises ConnectionError: Ray unreachable.
    """
    from pruning_tools.federated.core import evaluate_on
    from pruning_tools.federated.run import run_simulation_job
    from pruning_tools.ultralytics_adapter import load_checkpoint

    run = Path(out).resolve()
    run.mkdir(parents=True, exist_ok=True)
    grouping = check_groups(cfg, groups if groups is not None else auto_groups(cfg))
    t0 = time.monotonic()
    say = print if progress else (lambda *_a, **_k: None)
    jobs: dict[str, dict[str, Any]] = {}
    say(f"[tailored] global level: {len(cfg.clients)} vehicles; groups: {grouping}")
    jobs["global"] = run_simulation_job(cfg, run / "global", ray_address, progress)
    for name, members in grouping.items():
        say(f"[tailored] group {name}: {members}")
        gcfg = group_config(cfg, name, members, group_budget)
        jobs[name] = run_simulation_job(gcfg, run / "groups" / name, ray_address, progress)
        jobs[name]["batches"] = {"stage1_per_vehicle": gcfg.stage1_batches, "local_steps_per_round": gcfg.local_steps,
                                 "finetune_total": gcfg.rounds * gcfg.local_steps * len(gcfg.clients)}
    if control:
        steps = max(jobs[n]["batches"]["local_steps_per_round"] for n in grouping)
        s1 = max(jobs[n]["batches"]["stage1_per_vehicle"] for n in grouping)
        ccfg = dataclasses.replace(cfg, name=f"{cfg.name}_control", local_steps=steps, stage1_batches=s1)
        say(f"[tailored] control: global level with {steps} local batches per vehicle per round")
        jobs["control"] = run_simulation_job(ccfg, run / "control", ray_address, progress)
        jobs["control"]["batches"] = {"stage1_per_vehicle": s1, "local_steps_per_round": steps,
                                      "finetune_total": ccfg.rounds * steps * len(ccfg.clients)}
    for job in jobs.values():  # the job's own stage 1 + rounds (kept across resumes), not this call's
        job["wall_s"] = round(float(job["stage1"].get("wall_s") or 0.0)
                              + sum(float(r.get("wall_s") or 0.0) for r in job["rounds"]), 1)
    used_seeds = {c.seed for c in cfg.clients} | {cfg.server_seed}
    dense, _ = load_checkpoint(cfg.baseline_path())
    glob, _ = load_checkpoint(jobs["global"]["model"])
    rows = []
    sets: dict[str, tuple[Path, int]] = {}
    for i, (name, members) in enumerate(grouping.items()):
        seed = cfg.server_seed + 101 + i
        while seed in used_seeds:
            seed += 1
        used_seeds.add(seed)
        sets[name] = (heldout_set(cfg, name, members, run / "heldout" / name, seed, heldout_frames, progress), seed)
    levels = {f"fed_{n}": load_checkpoint(jobs[n]["model"])[0] for n in grouping}
    if control:
        levels["control_global"] = load_checkpoint(jobs["control"]["model"])[0]
    # every group level on every group's held-out scenes: does a level win on its own conditions only?
    cross = {lv: {g: evaluate_on(m, sets[g][0], "test", cfg)["map50_95"] for g in grouping} for lv, m in levels.items()}
    for name, members in grouping.items():
        data, seed = sets[name]
        own = levels[f"fed_{name}"]
        ev = {k: evaluate_on(m, data, "test", cfg) for k, m in (("own", own), ("global", glob), ("dense", dense))}
        gain = 100.0 * (ev["own"]["map50_95"] - ev["global"]["map50_95"])
        rows.append({"name": name, "level": f"fed_{name}", "clients": members, "mix": group_mix(cfg, members),
                     "param_sparsity": jobs[name]["stage1"].get("param_sparsity"), "batches": jobs[name]["batches"],
                     "bytes_per_round": [r["bytes_down"] + r["bytes_up"] for r in jobs[name]["rounds"]],
                     "wall_s": jobs[name]["wall_s"],
                     "heldout": {"data": f"generated scenes of group {name}'s condition mix, seed {seed}, test half "
                                         f"({ev['own']['images']} images; never trained on)", **ev,
                                 "gain_points": round(gain, 3),
                                 "other_levels": {lv: row[name] for lv, row in cross.items() if lv != f"fed_{name}"},
                                 **({"gain_vs_control_points": round(100.0 * (ev["own"]["map50_95"]
                                                                            - cross["control_global"][name]), 3)}
                                    if control else {})}})
        say(f"[tailored] {name}: own mAP50-95 {ev['own']['map50_95']:.4f}, global {ev['global']['map50_95']:.4f} "
            f"({gain:+.2f} points), dense {ev['dense']['map50_95']:.4f}")
    mixes = {r["name"]: r["mix"] for r in rows}
    conditions = {"default": GLOBAL_LEVEL, "levels": condition_map(mixes),
                  "groups": [{"name": r["name"], "level": r["level"], "mix": r["mix"], "clients": r["clients"],
                              "heldout_map50_95": {"own": r["heldout"]["own"]["map50_95"],
                                                   "global": r["heldout"]["global"]["map50_95"]}} for r in rows]}
    write_export_summary(run, cfg, {k: v for k, v in jobs.items() if k != "control"}, conditions)
    results = {
        "name": cfg.name, "engine": "flwr simulation (Ray" + (f" at {ray_address})" if ray_address else ", local 127.0.0.1)"),
        "config": cfg.to_dict(), "group_budget": group_budget, "groups": rows, "conditions": conditions,
        "cross_map50_95": {"rows": "level", "columns": "group's held-out test scenes", **cross},
        "global": {"level": GLOBAL_LEVEL, "clients": [c.id for c in cfg.clients],
                   "param_sparsity": jobs["global"]["stage1"].get("param_sparsity"),
                   "batches": {"stage1_per_vehicle": cfg.stage1_batches, "local_steps_per_round": cfg.local_steps,
                               "finetune_total": cfg.rounds * cfg.local_steps * len(cfg.clients)},
                   "bytes_per_round": [r["bytes_down"] + r["bytes_up"] for r in jobs["global"]["rounds"]],
                   "wall_s": jobs["global"]["wall_s"]},
        **({"control": {"level": "control_global", "batches": jobs["control"]["batches"],
                        "wall_s": jobs["control"]["wall_s"], "heldout_map50_95": cross["control_global"],
                        "note": "not exported: a check on where the groups' gains come from"}} if control else {}),
        "target": {"min_gain_points": TARGET_GAIN_POINTS, "on": "each group's held-out generated scenes (test half)",
                   "met": {r["name"]: bool(r["heldout"]["gain_points"] >= TARGET_GAIN_POINTS) for r in rows}},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    write_json(run / "tailored.json", results)
    return results


def write_export_summary(run: Path, cfg: FederatedConfig, jobs: Mapping[str, Mapping[str, Any]],
                         conditions: dict[str, Any]) -> Path:
    """``RUN/summary.json`` + ``RUN/config.yaml`` in the layout ``pruning-tools export`` reads (a prune run's):
    the dense baseline, one checkpoint per level (method ``federated``), the ``conditions`` block; the
    export's dataset (val split for the precision search, train for INT8 calibration) is the global job's
    held-out server frames."""
    checkpoints = []
    for name, job in jobs.items():
        level = GLOBAL_LEVEL if name == "global" else f"fed_{name}"
        sp = job["stage1"].get("param_sparsity")
        checkpoints.append({"method": "federated", "trial": 0, "level": cfg.target, "level_name": level,
                            "sparsity": float(sp if sp is not None else cfg.target), "path": str(job["model"])})
    server_data = run / "global" / "server" / "data" / "yolo"
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(server_data)}}))
    write_json(run / "summary.json", {
        "baseline": str(cfg.baseline_path()), "imgsz": list(cfg.imgsz), "source": "pruning-tools federated-groups",
        "checkpoints": checkpoints, "conditions": conditions})
    return run / "summary.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pruning-tools federated-groups", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True,
                   help="fleet YAML (pruning_tools/configs/federated_groups.yaml); optional groups: {name: [ids]}")
    p.add_argument("--out", type=Path, required=True, help="run folder (tailored.json, summary.json for export)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray cluster for the simulation engine "
                                                                  "(default: a local Ray on 127.0.0.1)")
    p.add_argument("--control", action="store_true",
                   help="also a control global level with the groups' per-vehicle batches (not exported)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-step lines")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg, groups, frames, budget = load_groups_config(a.config)
        if a.ray is not None:  # a bad address fails here, before any level is trained (as `federated` does)
            from pruning_tools.pipeline.ray_executor import parse_address

            parse_address(a.ray)
        res = run_tailored(cfg, a.out, groups, a.ray, progress=not a.no_progress, heldout_frames=frames,
                           group_budget=budget, control=a.control)
    except (FederatedConfigError, ConnectionError, ValueError) as exc:
        print(f"pruning-tools federated-groups: {exc}", file=sys.stderr)
        return 2
    for r in res["groups"]:
        h = r["heldout"]
        print(f"{r['level']}: {h['own']['map50_95']:.4f} vs global {h['global']['map50_95']:.4f} "
              f"({h['gain_points']:+.2f} points) on {r['name']}'s held-out scenes")
    print(f"results: {Path(a.out) / 'tailored.json'}; export: pruning-tools export --run {a.out} --zoo ZOO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
