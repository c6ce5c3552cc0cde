#!/usr/bin/env python3
"""Stand-in driving scenes (development only, not part of the product).

Crude KITTI-sized (1242x375) frames — sky, buildings, a road in perspective, cars, pedestrians
and cyclists drawn with OpenCV — written directly in the YOLO layout of ``pruning-tools kitti
convert`` (``images/``, ``labels/``, ``data.yaml``). Used to pre-train the shipped baseline while
the project's scene generator (``pruning-tools kitti generate``) was not available yet; see
docs/pruning.md.

    .venv/bin/python tools/stand_in_scenes.py OUT_DIR TRAIN_FRAMES
"""
import sys, cv2, numpy as np, yaml
from pathlib import Path
H, W = 375, 1242
def scene(rng):
    img = np.zeros((H, W, 3), np.uint8)
    hor = int(rng.integers(150, 200))
    sky = np.array([rng.integers(150, 235), rng.integers(120, 200), rng.integers(80, 160)])
    img[:hor] = sky
    img[hor:] = rng.integers(70, 110)
    for _ in range(int(rng.integers(3, 9))):  # buildings / trees
        x = int(rng.integers(0, W)); w = int(rng.integers(40, 200)); h = int(rng.integers(30, 140))
        col = tuple(int(c) for c in rng.integers(30, 180, 3))
        cv2.rectangle(img, (x, hor - h), (x + w, hor + 10), col, -1)
    cx = W // 2 + int(rng.integers(-150, 150))
    road = np.array([[cx - 40, hor], [cx + 40, hor], [W + 300, H], [-300, H]], np.int32)
    cv2.fillPoly(img, [road], (int(rng.integers(60, 95)),) * 3)
    for k in range(8):
        y0 = hor + (H - hor) * k / 8; y1 = y0 + (H - hor) / 16
        cv2.line(img, (cx, int(y0)), (cx, int(y1)), (220, 220, 220), max(1, int(k / 2)))
    objs = []
    for _ in range(int(rng.integers(2, 9))):
        c = int(rng.choice([0, 0, 0, 1, 2]))
        yb = int(rng.integers(hor + 8, H + 30))
        s = (yb - hor) / (H - hor)  # perspective scale
        if c == 0:
            h = max(8, int(s * rng.uniform(90, 140))); w = int(h * rng.uniform(1.1, 2.2))
        elif c == 1:
            h = max(10, int(s * rng.uniform(110, 190))); w = int(h * rng.uniform(0.3, 0.45))
        else:
            h = max(10, int(s * rng.uniform(100, 170))); w = int(h * rng.uniform(0.6, 1.0))
        x0 = int(rng.integers(-w // 3, W - 2 * w // 3)); y0 = yb - h
        col = tuple(int(v) for v in rng.integers(0, 255, 3))
        if c == 0:
            cv2.rectangle(img, (x0, y0 + h // 3), (x0 + w, yb - h // 8), col, -1)
            cv2.rectangle(img, (x0 + w // 6, y0), (x0 + 5 * w // 6, y0 + h // 3), col, -1)
            cv2.rectangle(img, (x0 + w // 5, y0 + h // 12), (x0 + 4 * w // 5, y0 + h // 3), (40, 40, 50), -1)
            for wx in (x0 + w // 5, x0 + 4 * w // 5):
                cv2.circle(img, (wx, yb - h // 8), max(2, h // 7), (15, 15, 15), -1)
        elif c == 1:
            cv2.circle(img, (x0 + w // 2, y0 + w // 2), max(2, w // 2), (150, 170, 200), -1)
            cv2.rectangle(img, (x0, y0 + w), (x0 + w, y0 + int(h * 0.6)), col, -1)
            cv2.line(img, (x0 + w // 3, y0 + int(h * 0.6)), (x0 + w // 4, yb), col, max(1, w // 4))
            cv2.line(img, (x0 + 2 * w // 3, y0 + int(h * 0.6)), (x0 + 3 * w // 4, yb), col, max(1, w // 4))
        else:
            r = max(3, w // 4)
            cv2.circle(img, (x0 + r, yb - r), r, (20, 20, 20), max(1, r // 4))
            cv2.circle(img, (x0 + w - r, yb - r), r, (20, 20, 20), max(1, r // 4))
            cv2.line(img, (x0 + r, yb - r), (x0 + w - r, yb - r), (90, 90, 90), max(1, r // 4))
            cv2.rectangle(img, (x0 + w // 3, y0 + h // 6), (x0 + 2 * w // 3, yb - 2 * r), col, -1)
            cv2.circle(img, (x0 + w // 2, y0 + h // 10), max(2, w // 8), (150, 170, 200), -1)
        bx0, by0, bx1, by1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, yb)
        if bx1 - bx0 > 4 and by1 - by0 > 6:
            objs.append((c, (bx0 + bx1) / 2 / W, (by0 + by1) / 2 / H, (bx1 - bx0) / W, (by1 - by0) / H))
    g = rng.uniform(0.6, 1.3)
    img = np.clip(img.astype(np.float32) * g + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, objs
root = Path(sys.argv[1]); n = {"train": int(sys.argv[2]), "val": 60, "test": 60}
rng = np.random.default_rng(123)
for split, k in n.items():
    (root / "images" / split).mkdir(parents=True, exist_ok=True); (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(k):
        img, objs = scene(rng)
        cv2.imwrite(str(root / "images" / split / f"{i:06d}.png"), img)
        (root / "labels" / split / f"{i:06d}.txt").write_text("".join(f"{c} {a:.6f} {b:.6f} {w:.6f} {h:.6f}\n" for c, a, b, w, h in objs))
(root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "test": "images/test", "names": ["Car", "Pedestrian", "Cyclist"]}))
