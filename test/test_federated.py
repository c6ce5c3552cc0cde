"""pruning_tools.federated: config validation, stage-1 sums adding up to the central computation, a
simulation-engine run on a local Ray (a vehicle failing in a round, the CLI killed mid-run and resumed,
what crossed the wire) and the deployment engine (flower-superlink + three flower-supernode processes on
127.0.0.1, ports of this test's own, one SIGKILLed mid-round, all stopped by pid)."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pruning_tools.federated.config import FederatedConfig, FederatedConfigError, load_config
from sparse_perception.tools.testing import ManagedProcess, wait_for

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "pruning_tools" / "configs" / "federated_quick.yaml"


def tiny_config(**over: object) -> dict:
    """Two vehicles, tiny input, a few batches: the mechanics in seconds."""
    d = {
        "name": "t", "imgsz": [128, 416], "crop_width": 256, "target": 0.3, "stage1_batches": 1,
        "rounds": 2, "local_steps": 2, "batch": 2, "bn_batches": 1, "distill_weight": 1.0,
        "server_frames": 10, "server_seed": 900, "central": True, "kitti_root": None, "round_timeout_s": 300,
        "clients": [{"id": "night", "conditions": ["night_clear", "night_rain"], "frames": 12, "seed": 11},
                    {"id": "fog", "conditions": ["day_fog", "dusk_fog"], "frames": 12, "seed": 22}],
    }
    d.update(over)
    return d


# ------------------------------------------------------------------------------------------ config
def test_quick_config_loads_and_round_trips() -> None:
    cfg = load_config(QUICK)
    assert len(cfg.clients) == 3 and {c.id for c in cfg.clients} == {"night", "fog", "day"}
    assert FederatedConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.client("night").condition_mix()["night_clear"] == 0.5


@pytest.mark.parametrize("change, match", [
    ({"roundz": 3}, "unknown key"),
    ({"clients": [{"id": "a", "conditions": ["day_snow"], "seed": 1}, {"id": "b", "conditions": ["day_fog"], "seed": 2}]},
     "unknown condition"),
    ({"clients": [{"id": "a", "conditions": ["day_fog"], "seed": 1}]}, "at least 2"),
    ({"clients": [{"id": "a", "conditions": ["day_fog"], "seed": 1}, {"id": "a", "conditions": ["day_fog"], "seed": 2}]},
     "unique"),
    ({"server_seed": 11}, "own seed"),
    ({"strategy": "fedavg", "proximal_mu": 0.1}, "fedprox"),
    ({"fault": {"client": "nobody"}}, "not a client"),
    ({"imgsz": [100, 416]}, "multiples of 32"),
])
def test_config_errors_name_the_key(change: dict, match: str) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        FederatedConfig.from_dict(tiny_config(**change))


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    from pruning_tools.federated.run import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config(roundz=1)))
    assert main(["--config", str(bad), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ stage 1
def test_fleet_stage1_sums_equal_the_central_sum_and_budgets(tmp_path: Path) -> None:
    """Two vehicles' stage-1 sums, added by the server, equal stage 1 run centrally over both vehicles'
    batches (the same code), and so do the budgets and masks."""
    import torch

    from pruning_tools.federated import core
    from pruning_tools.federated.data import prepare_client_data
    from pruning_tools.ultralytics_adapter import load_checkpoint

    torch.set_num_threads(1)
    cfg = FederatedConfig.from_dict(tiny_config(stage1_batches=1))
    dense, _ = load_checkpoint(cfg.baseline_path())
    space = core.build_space(dense, cfg)
    streams = [core.make_stream([prepare_client_data(cfg, c, tmp_path / c.id).generated], cfg, c.seed)
               for c in cfg.clients]
    parts = [core.client_stage1(dense, space, s, 1) for s in streams]
    fleet = core.aggregate_stage1(parts)

    class Both:  # vehicle 0's batch, then vehicle 1's: the union in one place
        batch = cfg.batch

        def get(self, step: int) -> dict:
            return streams[step].get(0)

    central = core.client_stage1(dense, space, Both(), 2)
    np.testing.assert_allclose(fleet.layer_sums, central.layer_sums, rtol=1e-5)
    for name, v in central.channel_scores.items():
        np.testing.assert_allclose(fleet.channel_scores[name], v, rtol=1e-4, atol=1e-9)
    assert fleet.batches == 2 and fleet.samples == 2 * cfg.batch
    r_f, r_c = core.budgets(space, fleet, cfg), core.budgets(space, central, cfg)
    np.testing.assert_allclose(r_f, r_c, rtol=1e-6)
    assert abs(space.param_sparsity(r_f) - cfg.target) < 0.02
    # vehicles differ (their own data), so each one's sums alone are not the fleet's
    assert not np.allclose(parts[0].layer_sums, fleet.layer_sums)
    masks = core.keep_masks(space, r_f, fleet.channel_scores)
    pruned = core.prune_once(dense, space, r_f, masks)
    again = core.pruned_from_masks(dense, space, r_f, masks)
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    for k, v in pruned.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    wrong = {**masks, space.layers[0].name: np.ones(space.layers[0].channels, np.int8)}
    if space.kept(0, float(r_f[0])) < space.layers[0].channels:
        with pytest.raises(ValueError, match="keeps"):
            core.pruned_from_masks(dense, space, r_f, wrong)


# ------------------------------------------------------------------------------------------ the wire
def check_wire(run: Path, cfg: FederatedConfig) -> dict[str, int]:
    """Everything the server sent or received: weights (shapes of the dense or pruned model's float
    state), stage-1 sums (one value per layer / channel), keep masks and ratios, metrics and
    config scalars — no image- or label-shaped array, no uint8 data."""
    import torch

    from pruning_tools.federated import core
    from pruning_tools.ultralytics_adapter import load_checkpoint

    dense, _ = load_checkpoint(cfg.baseline_path())
    space = core.build_space(dense, cfg)
    widths = {layer.name: layer.channels for layer in space.layers}
    dense_shapes = {k: list(v.shape) for k, v in core.float_state(dense).items()}
    pruned, _ = load_checkpoint(run / "federated" / "model.pt")
    pruned_shapes = {k: list(v.shape) for k, v in core.float_state(pruned).items()}
    counts = {"down": 0, "up": 0, "errors": 0}
    allowed_configs = {"round", "local-steps", "total-steps", "server-round", "split", "proximal-mu",
                       "id", "frames", "train_frames", "real_frames"}
    for line in (run / "server" / "wire.jsonl").read_text().splitlines():
        m = json.loads(line)
        counts[m["dir"]] += 1
        if "error" in m:
            counts["errors"] += 1
            continue
        for rec, arrays in m["arrays"].items():
            for key, a in arrays.items():
                shape, dtype = a["shape"], a["dtype"]
                assert "uint8" not in dtype, (rec, key, dtype)
                if rec == "arrays":
                    assert shape in (dense_shapes.get(key), pruned_shapes.get(key)), (key, shape)
                elif rec == "sums":
                    if key == "layer_sums":
                        assert shape == [len(space.layers)]
                    else:
                        assert key.startswith("ch.") and shape == [widths[key[3:]]], (key, shape)
                elif rec == "masks":
                    if key == "ratios":
                        assert shape == [len(space.layers)]
                    else:
                        assert key.startswith("mask.") and shape == [widths[key[5:]]] and dtype == "int8", (key, shape)
                else:
                    raise AssertionError(f"unexpected array record {rec!r}")
                # an image would be (3, H, W) / (H, W, 3); labels (n, 5): only conv weights have > 2 dims
                if len(shape) > 2:
                    assert key.endswith(".weight"), key
                assert not (len(shape) == 2 and shape[-1] in (4, 5, 6)), (key, shape)
        for rec, keys in m["configs"].items():
            assert set(keys) <= allowed_configs, keys
            assert all(t in ("int", "float", "str", "bool") for t in keys.values()), keys
        for rec, keys in m["metrics"].items():
            assert set(keys) <= {"num-examples", "loss", "map50_95", "map50", "batches", "samples", "partition-id"}, keys
    return counts


# ------------------------------------------------------------------------------------------ engines
def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop(procs: list[ManagedProcess], hard: bool = False) -> None:
    """Stop our processes and whatever they started (Ray, Flower's SuperExec run in their own groups), by pid."""
    import psutil

    kids = [k for p in procs for k in _descendants(p.pid)]
    for p in procs:
        if hard and p.alive():
            os.killpg(p.pid, signal.SIGKILL)
            p.proc.wait(10)
        p.stop()
    for pid in kids:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(5)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_simulation_engine_failed_vehicle_kill_resume_and_wire(tmp_path: Path) -> None:
    """`pruning-tools federated` on Flower's simulation engine (a local Ray on 127.0.0.1): killed after
    its first round and rerun, it resumes there; vehicle `fog` fails in round 2 and the run goes on
    without it; results.json has the rounds, the vehicles and both models' mAP; only weights, masks,
    sums and metrics crossed the wire."""
    d = tiny_config(rounds=3, min_clients=1, fault={"client": "fog", "round": 2, "mode": "raise"})
    cfg_path = tmp_path / "fed.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pruning_tools.cli", "federated", "--config", str(cfg_path), "--out", str(run),
           "--no-progress"]
    rounds = run / "server" / "rounds.json"
    first = ManagedProcess(cmd, env=_env(), log_path=tmp_path / "first.log")
    try:
        assert wait_for(lambda: rounds.is_file() or not first.alive(), 400, period=0.2), first.output()[-3000:]
        assert first.alive(), first.output()[-3000:]
    finally:
        _stop([first], hard=True)
    before = json.loads(rounds.read_text())
    assert len(before) >= 1 and before[0]["round"] == 1
    assert not (run / "results.json").exists()
    second = ManagedProcess(cmd, env=_env(), log_path=tmp_path / "second.log")
    try:
        assert wait_for(lambda: not second.alive(), 600, period=0.5), "resumed run did not finish"
    finally:
        _stop([second])
    assert second.proc.returncode == 0, second.output()[-4000:]
    res = json.loads((run / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [1, 2, 3]
    assert res["rounds"][0] == before[0]  # round 1 was not redone
    cfg = FederatedConfig.from_dict(d)
    wire = [json.loads(x) for x in (run / "server" / "wire.jsonl").read_text().splitlines()]
    assert sum(1 for m in wire if m["phase"] == "stage1" and m["dir"] == "down") == 2  # stage 1 ran once
    r2 = res["rounds"][1]
    assert [f["client"] for f in r2["failed"] if f["phase"] == "train"] == ["fog"]
    assert "injected fault" in r2["failed"][0]["reason"] or "ClientAppException" in r2["failed"][0]["reason"]
    assert r2["clients"]["fog"]["train"] is None and r2["clients"]["night"]["train"]["loss"] > 0
    for r in res["rounds"]:
        assert r["bytes_down"] > 0 and r["bytes_up"] > 0 and r["wall_s"] > 0
        assert 0 <= r["global"]["map50_95"] <= 1
    assert [c["id"] for c in res["clients"]] == ["night", "fog"]
    assert all(c["n_frames"] == 12 and c["train_frames"] > 0 and c["real_frames"] == 0 for c in res["clients"])
    for block in ("federated", "central", "dense"):
        assert math.isfinite(res[block]["map50_95"]) and 0 <= res[block]["map50_95"] <= 1, block
        assert set(res[block]["per_client"]) == {"night", "fog"}
    assert res["central"]["train_images"] == res["federated"]["train_images"]  # equal data at equal steps
    assert res["central"]["steps_total"] == res["federated"]["steps_per_client"] == 6
    assert res["target"]["max_gap_points"] == 1.5 and isinstance(res["target"]["met"], bool)
    assert (run / "rounds.png").stat().st_size > 1000
    counts = check_wire(run, cfg)
    assert counts["errors"] == 1 and counts["up"] > 0


@pytest.mark.slow
def test_deployment_engine_superlink_three_supernodes_one_killed_mid_round(tmp_path: Path) -> None:
    """The same ServerApp/ClientApp on Flower's deployment engine: `flower-superlink --insecure` and three
    `flower-supernode` processes on 127.0.0.1 (ports of this test's own), the job submitted with
    `flwr run`. Vehicle `day` is SIGKILLed (its SuperNode and the ClientApp process under it, by pid)
    while round 1's local training runs: the run finishes both rounds with the other two (min_clients 2),
    `day` is in round 1's failed list and not sampled in round 2; every process stopped by pid."""
    from pruning_tools.federated.job import write_job

    bindir = Path(sys.executable).parent
    for exe in ("flower-superlink", "flower-supernode", "flwr"):
        if not (bindir / exe).is_file():
            pytest.skip(f"{exe} not installed beside {sys.executable}")
    day = {"id": "day", "conditions": ["day_clear"], "frames": 12, "seed": 33}
    # round_timeout_s 150: above Flower's offline detection (2 missed 30-s heartbeats), so the dead node's
    # "node unavailable" reply ends round 1, well before the timeout would
    cfg = FederatedConfig.from_dict(tiny_config(rounds=2, local_steps=4, central=False, min_clients=2,
                                                round_timeout_s=150, clients=tiny_config()["clients"] + [day]))
    run = tmp_path / "run"
    job = write_job(cfg, run, False)
    link, *node_ports = _free_ports(4)
    home = tmp_path / "flwr_home"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    env = {**_env(), "FLWR_HOME": str(home)}
    procs: list[ManagedProcess] = []
    try:
        sl = ManagedProcess([str(bindir / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link),
                             "--disable-runtime-dependency-installation"], env=env, log_path=tmp_path / "superlink.log")
        procs.append(sl)
        assert sl.wait_for_output("Uvicorn running", 60), sl.output()[-2000:]
        nodes = []
        for i, port in enumerate(node_ports):
            nodes.append(ManagedProcess([str(bindir / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                                         "--port", str(port), "--node-config", f"partition-id={i}"],
                                        env=env, log_path=tmp_path / f"supernode{i}.log"))
        procs.extend(nodes)
        flwr = ManagedProcess([str(bindir / "flwr"), "run", str(REPO / "pruning_tools" / "federated" / "flower_app"),
                               "test", "--run-config", f'job="{job}"', "--stream"], env=env,
                              log_path=tmp_path / "flwr_run.log")
        procs.append(flwr)
        # the ClientApp's train handler makes the vehicle's optim/ folder just before local training and
        # writes optim/round_001.pt when round 1's training is done
        optim = run / "clients" / "day" / "optim"
        assert wait_for(lambda: optim.is_dir() or not sl.alive(), 400, period=0.05), sl.output()[-3000:]
        victim = nodes[2]
        tree = [victim.pid] + _descendants(victim.pid)
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        victim.proc.wait(10)
        assert not (optim / "round_001.pt").exists(), "vehicle day finished training before it was killed"
        for pid in tree[1:]:
            assert wait_for(lambda: _gone(pid), 10), f"pid {pid} of the killed vehicle still runs"
        summary = run / "server" / "summary.json"
        ok = wait_for(lambda: summary.is_file() or not sl.alive() or not flwr.alive(), 500, period=0.5)
        assert ok and summary.is_file(), (flwr.output()[-3000:], sl.output()[-3000:])
    finally:
        _stop(procs[::-1])
    for p in procs:
        assert not p.alive()
    s = json.loads(summary.read_text())
    assert [r["round"] for r in s["rounds"]] == [1, 2]
    r1, r2 = s["rounds"]
    assert r1["sampled"]["train"] == ["day", "fog", "night"]
    dead = [f for f in r1["failed"] if f["phase"] == "train"]
    assert [f["client"] for f in dead] == ["day"] and dead[0]["reason"], r1["failed"]
    assert r1["clients"]["day"]["train"] is None
    assert r2["sampled"] == {"train": ["fog", "night"], "evaluate": ["fog", "night"]} and r2["failed"] == []
    assert r2["clients"]["day"] == {"train": None, "val": None}
    for r in (r1, r2):
        assert all(r["clients"][c]["train"]["loss"] > 0 and r["clients"][c]["val"] is not None for c in ("night", "fog"))
    assert [c["id"] for c in s["stage1"]["clients"]] == ["night", "fog", "day"]
    counts = check_wire(run, cfg)
    assert counts["errors"] >= 1
    # the ports were ours: nothing of the run listens on them any more (TIME_WAIT aside)
    for port in (link, *node_ports):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1)


def test_local_finetune_fedprox_pulls_towards_the_round_start_and_momentum_persists(tmp_path: Path) -> None:
    """FedProx's proximal term keeps the local weights nearer the weights the round started from; the
    vehicle's optimiser state is written after a round and read by the next one."""
    import copy

    import torch

    from pruning_tools.federated import core
    from pruning_tools.federated.data import prepare_client_data
    from pruning_tools.ultralytics_adapter import load_checkpoint

    torch.set_num_threads(1)
    cfg = FederatedConfig.from_dict(tiny_config(lr0=0.02, bn_batches=0, distill_weight=0.0))
    dense, _ = load_checkpoint(cfg.baseline_path())
    stream = core.make_stream([prepare_client_data(cfg, cfg.clients[0], tmp_path / "v").generated], cfg, 1)
    start = core.float_state(dense)

    def moved(mu: float, out: Path | None = None) -> float:
        m = copy.deepcopy(dense)
        core.local_finetune(m, stream, cfg, 0, 2, 4, proximal_mu=mu, optim_out=out)
        s = core.float_state(m)
        return float(sum(((s[k] - start[k]) ** 2).sum() for k in start if "running" not in k))

    saved = tmp_path / "optim_001.pt"
    free, prox = moved(0.0, saved), moved(50.0)
    assert 0 < prox < free
    state = torch.load(saved, weights_only=True)
    assert state["state"] and all("momentum_buffer" in v for v in state["state"].values())
    m = copy.deepcopy(dense)  # round 2 starts from round 1's momentum: a different step than afresh
    core.local_finetune(m, stream, cfg, 2, 1, 4, optim_in=saved)
    fresh = copy.deepcopy(dense)
    core.local_finetune(fresh, stream, cfg, 2, 1, 4)
    a, b = core.float_state(m), core.float_state(fresh)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_cli_bad_ray_address_exits_2_before_anything(tmp_path: Path) -> None:
    from pruning_tools.federated.run import main

    assert main(["--config", str(QUICK), "--out", str(tmp_path / "run"), "--ray", "nonsense", "--no-progress"]) == 2
    assert not (tmp_path / "run").exists()



@pytest.mark.slow
def test_simulation_engine_on_a_ray_cluster_address(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`--ray 127.0.0.1:PORT`: the simulation engine's vehicles run on a Ray cluster of the test's own
    (a loopback head from test/helpers/ray_cluster.py, token authentication)."""
    import subprocess

    from helpers.ray_cluster import LoopbackRayCluster

    cfg_path = tmp_path / "fed.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(rounds=1, central=False)))
    cluster = LoopbackRayCluster(Path(tmp_path_factory.mktemp("ray")), REPO)  # short: Ray's socket paths
    try:
        cluster.wait_nodes(1)
        run = tmp_path / "run"
        out = subprocess.run([sys.executable, "-m", "pruning_tools.cli", "federated", "--config", str(cfg_path),
                              "--out", str(run), "--no-progress", "--ray", cluster.address], cwd=REPO,
                             env={**cluster.env, **_env()}, capture_output=True, text=True, timeout=600)
    finally:
        cluster.stop()
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    res = json.loads((run / "results.json").read_text())
    assert "Ray at 127.0.0.1:" in res["engine"]
    assert [r["round"] for r in res["rounds"]] == [1] and res["rounds"][0]["failed"] == []
    assert "central" not in res and 0 <= res["federated"]["map50_95"] <= 1
