"""The demo report's speed-ladder section: from the manifest's ``ladder`` block only."""
from __future__ import annotations

from pruning_tools.demo.report import ladder_lines


def test_ladder_lines_show_speedups_and_excluded_levels() -> None:
    row = {"backend": "onnxruntime", "precision": "int8", "reason": "r"}
    m = {"ladder": {"timing": {"runs": 20},
                    "levels": [{**row, "level": "dense", "param_sparsity": 0.0, "latency_ms": {"median": 50.0},
                                "speedup_vs_dense": 1.0, "map50_95": 0.4},
                               {**row, "level": "x1.5", "param_sparsity": 0.4, "speedup_target": 1.5,
                                "latency_ms": {"median": 33.0}, "speedup_vs_dense": 1.515, "map50_95": 0.35}],
                    "excluded": [{**row, "level": "s50", "param_sparsity": 0.5, "latency_ms": {"median": 52.0},
                                  "speedup_vs_dense": 0.96, "map50_95": 0.38, "reason": "not faster than dense"}]}}
    lines = ladder_lines(m)
    x15 = next(ln for ln in lines if ln.startswith("| x1.5 "))
    assert "| x1.5 |" in x15 and "1.51x" in x15 and "40.0 %" in x15 and x15.endswith("| yes |")
    assert next(ln for ln in lines if ln.startswith("| s50 ")).endswith("| no: not faster than dense |")
    assert any("20 rounds" in ln for ln in lines)
    assert ladder_lines({"artifacts": []}) == []  # a zoo from before the ladder: no section


def test_streaming_table_has_every_mode_answered_and_staleness() -> None:
    from pruning_tools.demo.report import streaming_lines

    row = {"streaming_score": 0.42, "answered_fraction": 0.995, "dropped_fraction": 0.25, "mean_staleness_ms": 216.8}
    pol = {"held_out": {"drives": [10_000_000, 10_000_001],
                        "results": {"policy": {**row, "streaming_score": 0.47},
                                    "fixed:dense": row, "fixed:x2": {**row, "dropped_fraction": 0.0},
                                    "oracle": {**row, "streaming_score": 0.48}},
                        "gap_closed": 0.833}}
    lines = streaming_lines(pol)
    assert lines[0].startswith("| Mode | Streaming score") and "Instants answered" in lines[0]
    assert "Mean staleness (ms)" in lines[0]
    assert any(ln.startswith("| auto (policy) | 47.0 | 99.5 % | 25.0 % | 217 |") for ln in lines), lines
    assert any(ln.startswith("| fixed:x2 | 42.0 | 99.5 % | 0.0 % |") for ln in lines)
    assert lines[-1].endswith("closes 83 % of the always-dense → oracle gap.") and "2 (ids never trained on)" in lines[-1]
    assert "no held-out comparison" in streaming_lines({"mean_reward_per_step": {}})[0]


def test_real_drive_section_has_every_mode_answered_staleness_and_the_target() -> None:
    from pruning_tools.demo.report import tracking_lines

    def mode(sap: float, lv: str) -> dict:
        return {"sap": {"Car": sap, "Pedestrian": None, "Cyclist": 0.1}, "ap": {}, "sap_mean": sap, "ap_mean": sap + 0.01,
                "sap_mean_per_round": [sap], "answered": 140.0, "frames": 154, "mean_staleness_ms": 61.4,
                "levels": {lv: 140}}

    tr = {"data": "real KITTI tracking sequence 0000", "budget": "one camera ... + a competing process",
          "competing_load": {"frames": 300, "achieved_hz": 9.9, "mean_ms": 40.2},
          "modes": {"dense": mode(0.30, "dense"), "x2": mode(0.25, "x2"), "auto": mode(0.305, "x2")},
          "compare": {"best_fixed": "dense", "dense": "dense", "auto_sap": 0.305, "target_points": 1.0,
                      "auto_minus_best_fixed_points": 0.5, "auto_minus_dense_points": 0.5, "target_met": False,
                      "why": "auto is +0.50 sAP points from the best fixed level dense (target +1)"}}
    md = "\n".join(tracking_lines(tr))
    assert "| dense | 30.0 | – | 10.0 | 30.0 | 31.0 | 140 / 154 | 61 | dense 140 |" in md, md
    assert "| auto | 30.5 |" in md and "x2 140" in md
    assert "300 frames at 9.9 Hz, 40.2 ms each" in md
    assert "**not met**" in md and "+0.50 sAP points" in md
