"""The pruning comparison's rows as a table: shared by ``pruning-tools prune`` (``table.md``) and the
demo report (Table 1). Plain Python, no torch, so the report can import it cheaply.

``dense`` is the dense baseline's measurement dict and ``aggregate`` the per (method, level) rows
of ``results.json`` (means, ``<key>_std`` and ``trials``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

METHOD_LABELS = {"dense": "Dense baseline", "uniform": "Uniform magnitude (no RL)",
                 "importance": "Stage 1 budgets only", "full": "Full pipeline (stage 1 + PPO + fine-tune)"}


def aggregate_row(aggregate: Sequence[Mapping[str, Any]], method: str, level: float) -> Mapping[str, Any] | None:
    """The aggregate row of ``method`` at target ``level`` (``None`` when absent)."""
    return next((r for r in aggregate if r["method"] == method and abs(r["level"] - level) < 1e-9), None)


def _pm(row: Mapping[str, Any], key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    s = fmt.format(row[key] * scale)
    return s + (f" ± {fmt.format(row[key + '_std'] * scale)}" if row.get("trials", 1) > 1 else "")


#: Real-frame columns: (header, class) — KITTI AP|R40 at the class's KITTI IoU.
REAL_COLUMNS = (("Car AP real (IoU .7)", "Car"), ("Ped. AP real (IoU .5)", "Pedestrian"))


def _real_cells(row: Mapping[str, Any], trials: int) -> list[str]:
    real = row.get("real") or {}
    cells = []
    for _, name in REAL_COLUMNS:
        cls = (real.get("classes") or {}).get(name)
        if not cls or cls.get("ap_kitti") is None:
            cells.append("–")
            continue
        s = f"{cls['ap_kitti'] * 100:.1f}"
        cells.append(s + (f" ± {cls.get('ap_kitti_std', 0.0) * 100:.1f}" if trials > 1 else ""))
    return cells


def comparison_table(dense: Mapping[str, Any], aggregate: Sequence[Mapping[str, Any]],
                     labels: Mapping[str, str] = METHOD_LABELS) -> list[str]:
    """Markdown lines (header, dense row, one row per aggregate row in its order); mean ± std where
    a row has more than one trial. mAP50-95/mAP50 come from the run's test split; where the dense row
    has real-frame results (``--real-eval``), real-frame Car/Pedestrian AP columns follow."""
    real = bool(dense.get("real"))
    extra_h = "".join(f" {h} |" for h, _ in REAL_COLUMNS) if real else ""
    extra_s = "---|" * len(REAL_COLUMNS) if real else ""
    lines = ["| Method | Target | Sparsity | mAP50-95 | mAP50 |" + extra_h + " Latency (ms) | Size (MB) | Params (M) | GFLOPs |",
             "|---|---|---|---|---|" + extra_s + "---|---|---|---|",
             f"| {labels['dense']} | 0 % | 0.0 % | {dense['map50_95'] * 100:.1f} | {dense['map50'] * 100:.1f} |"
             + ("".join(f" {c} |" for c in _real_cells(dense, 1)) if real else "")
             + f" {dense['latency_ms']:.1f} | {dense['size_mb']:.2f} | {dense['params'] / 1e6:.3f} | {dense['gflops']:.2f} |"]
    for r in aggregate:
        lines.append(f"| {labels[r['method']]} | {int(round(r['level'] * 100))} % | "
                     f"{r['sparsity'] * 100:.1f} % | {_pm(r, 'map50_95', 100)} | {_pm(r, 'map50', 100)} |"
                     + ("".join(f" {c} |" for c in _real_cells(r, r.get("trials", 1))) if real else "")
                     + f" {_pm(r, 'latency_ms')} | {r['size_mb']:.2f} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} |")
    return lines
