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
