"""YOLO-format datasets as the training loop reads them: split resolution, letterboxed image + label
loading (optionally cached), mixing several datasets, augmentation and deterministic batch streams.

The batch at ``step`` of a :class:`BatchStream` is a pure function of ``(seed, step)``, so a training
run resumed at step ``k`` sees exactly the batches the uninterrupted run would.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import cv2
import numpy as np
import torch
import yaml

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


class DatasetError(ValueError):
    """A dataset is missing, empty or malformed; the message names the path."""


# ------------------------------------------------------------------------------------------ data
def letterbox_np(img: np.ndarray, new_shape: tuple[int, int] = (384, 1248), color: int = 114
                 ) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping aspect ratio and pad to ``new_shape`` (centred).

    :return: (image HxWx3 uint8, scale, pad_x, pad_y).
    """
    h, w = img.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (new_shape[1] - nw) / 2, (new_shape[0] - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color, color, color))
    return img, r, float(left), float(top)


def report_split(data: str | Path) -> str:
    """The split accuracy is reported on: ``test`` where the dataset has one, else ``val`` (a user's
    Ultralytics dataset often has no test split; reports then say they are on val)."""
    try:
        resolve_split_dir(data, "test")
        return "test"
    except DatasetError:
        return "val"


def resolve_split_dir(data: str | Path, split: str) -> tuple[Path, Path]:
    """Locate ``images/<split>`` and ``labels/<split>`` of a dataset root or its ``data.yaml``.

    :raises DatasetError: when the folder is missing or holds no images.
    """
    data = Path(data)
    root = data
    if data.is_file():
        cfg = yaml.safe_load(data.read_text()) or {}
        root = Path(cfg.get("path") or data.parent)
        if not root.is_absolute():
            root = (data.parent / root).resolve()
        sub = cfg.get(split)
        img_dir = root / sub if isinstance(sub, str) else root / "images" / split
    else:
        img_dir = root / "images" / split
    if not img_dir.is_dir():
        raise DatasetError(f"dataset split folder not found: {img_dir}")
    parts = list(img_dir.parts)
    if "images" in parts:
        k = len(parts) - 1 - parts[::-1].index("images")
        parts[k] = "labels"
        lbl_dir = Path(*parts)
    else:
        lbl_dir = root / "labels" / split
    if not any(p.suffix.lower() in IMG_EXTS for p in img_dir.iterdir()):
        raise DatasetError(f"dataset split {split!r} is empty: no images in {img_dir}")
    return img_dir, lbl_dir


class YoloDataset:
    """Letterboxed images and YOLO labels of one split.

    :param data: dataset root (``images/``, ``labels/``) or its ``data.yaml``.
    :param split: ``train`` / ``val`` / ``test``.
    :param imgsz: network input (H, W).
    :param indices: use only these image indices (sorted file order), e.g. a held-out slice.
    :param cache: keep decoded letterboxed images in memory.
    """

    def __init__(self, data: str | Path, split: str, imgsz: tuple[int, int] = (384, 1248),
                 indices: list[int] | None = None, cache: bool = False) -> None:
        self.img_dir, self.lbl_dir = resolve_split_dir(data, split)
        files = sorted(p for p in self.img_dir.iterdir() if p.suffix.lower() in IMG_EXTS)
        if indices is not None:
            files = [files[i] for i in indices]
        if not files:
            raise DatasetError(f"no images selected from {self.img_dir}")
        self.files = files
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def labels_raw(self, i: int) -> np.ndarray:
        """:return: (n, 5) class, cx, cy, w, h normalised to the original image."""
        path = self.lbl_dir / f"{self.files[i].stem}.txt"
        if not path.is_file():
            return np.zeros((0, 5), np.float32)
        rows = []
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise DatasetError(f"{path}:{ln}: expected 'class cx cy w h', got {line!r}")
            rows.append([float(v) for v in parts[:5]])
        return np.asarray(rows, np.float32).reshape(-1, 5)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """:return: (letterboxed RGB uint8 HxWx3, labels (n,5) class + x1,y1,x2,y2 in letterbox pixels)."""
        if i in self._cache:
            return self._cache[i]
        img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot read image {self.files[i]}")
        h0, w0 = img.shape[:2]
        lb, r, px, py = letterbox_np(img, self.imgsz)
        lb = cv2.cvtColor(lb, cv2.COLOR_BGR2RGB)
        lab = self.labels_raw(i)
        out = np.zeros((len(lab), 5), np.float32)
        if len(lab):
            out[:, 0] = lab[:, 0]
            out[:, 1] = (lab[:, 1] - lab[:, 3] / 2) * w0 * r + px
            out[:, 2] = (lab[:, 2] - lab[:, 4] / 2) * h0 * r + py
            out[:, 3] = (lab[:, 1] + lab[:, 3] / 2) * w0 * r + px
            out[:, 4] = (lab[:, 2] + lab[:, 4] / 2) * h0 * r + py
        if self.cache:
            self._cache[i] = (lb, out)
        return lb, out


class MixedDataset:
    """Several datasets sampled as one, each repeated a whole number of times per epoch.

    Used to train on a few real frames together with many generated ones: ``repeats`` sets how
    often each dataset's images appear in one pass (e.g. 40 real frames x 25 beside 1000
    generated frames x 1 gives real frames half of every batch on average).

    :param datasets: the parts (each with ``__len__`` and ``load``).
    :param repeats: one positive whole number per part.
    :raises ValueError: lengths differ or a repeat is below 1.
    """

    def __init__(self, datasets: list[YoloDataset], repeats: list[int]) -> None:
        if len(datasets) != len(repeats) or not datasets:
            raise ValueError(f"need one repeat per dataset, got {len(datasets)} datasets and {len(repeats)} repeats")
        if any(int(r) < 1 for r in repeats):
            raise ValueError(f"repeats must be whole numbers >= 1, got {list(repeats)}")
        self.parts = list(datasets)
        self.repeats = [int(r) for r in repeats]
        sizes = [len(d) * r for d, r in zip(self.parts, self.repeats)]
        self._ends = np.cumsum(sizes)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(np.searchsorted(self._ends, i, side="right"))
        start = 0 if k == 0 else int(self._ends[k - 1])
        part = self.parts[k]
        return part.load((i - start) % len(part))


def _augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, crop_width: int | None,
             hflip: float, hsv: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    lab = lab.copy()
    if crop_width and crop_width < w:
        x0 = int(rng.integers(0, w - crop_width + 1))
        img = img[:, x0:x0 + crop_width]
        if len(lab):
            bw = lab[:, 3] - lab[:, 1]
            lab[:, [1, 3]] = np.clip(lab[:, [1, 3]] - x0, 0, crop_width)
            keep = (lab[:, 3] - lab[:, 1]) >= np.maximum(2.0, 0.4 * bw)
            lab = lab[keep]
        w = crop_width
    if hflip and rng.random() < hflip:
        img = img[:, ::-1]
        if len(lab):
            lab[:, [1, 3]] = w - lab[:, [3, 1]]
    img = np.ascontiguousarray(img)
    if hsv:
        gain = 1.0 + rng.uniform(-hsv, hsv, 3)
        hsv_img = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv_img[..., 0] = (hsv_img[..., 0] * (1 + (gain[0] - 1) * 0.05)) % 180
        hsv_img[..., 1:] = np.clip(hsv_img[..., 1:] * gain[1:], 0, 255)
        img = cv2.cvtColor(hsv_img.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return img, lab


def collate(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack samples into an Ultralytics loss batch (boxes normalised cx,cy,w,h)."""
    imgs = np.stack([s[0] for s in samples])
    h, w = imgs.shape[1:3]
    img = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
    idx, cls, boxes = [], [], []
    for b, (_, lab) in enumerate(samples):
        if not len(lab):
            continue
        idx.append(np.full(len(lab), b, np.float32))
        cls.append(lab[:, :1])
        xyxy = lab[:, 1:5]
        boxes.append(np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h,
                               (xyxy[:, 2] - xyxy[:, 0]) / w, (xyxy[:, 3] - xyxy[:, 1]) / h], 1))
    if idx:
        return {"img": img, "batch_idx": torch.from_numpy(np.concatenate(idx)),
                "cls": torch.from_numpy(np.concatenate(cls)).float(),
                "bboxes": torch.from_numpy(np.concatenate(boxes)).float()}
    return {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}


class BatchStream:
    """Deterministic batches: the batch at ``step`` depends only on (seed, step).

    :param dataset: the data.
    :param batch: images per batch.
    :param seed: seed of order and augmentation.
    :param crop_width: random full-height crop width (None: full width).
    :param augment: flips and colour jitter.
    """

    def __init__(self, dataset: YoloDataset | MixedDataset, batch: int, seed: int = 0, crop_width: int | None = None,
                 augment: bool = True, hflip: float = 0.5, hsv: float = 0.3) -> None:
        if len(dataset) == 0:
            raise DatasetError("empty dataset")
        self.dataset, self.batch, self.seed = dataset, max(1, int(batch)), int(seed)
        self.crop_width, self.augment, self.hflip, self.hsv = crop_width, augment, hflip, hsv
        self._perm_epoch, self._perm = -1, np.arange(0)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset) // self.batch)

    def indices(self, step: int) -> list[int]:
        n = len(self.dataset)
        per_epoch = self.steps_per_epoch
        epoch, k = divmod(step, per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return [int(self._perm[(k * self.batch + j) % n]) for j in range(self.batch)]

    def get(self, step: int) -> dict[str, torch.Tensor]:
        samples = []
        for j, i in enumerate(self.indices(step)):
            img, lab = self.dataset.load(i)
            if self.augment or self.crop_width:
                rng = np.random.default_rng([self.seed, step, j, 7])
                img, lab = _augment(img, lab, rng, self.crop_width, self.hflip if self.augment else 0.0,
                                    self.hsv if self.augment else 0.0)
            samples.append((img, lab))
        return collate(samples)

    def iter_from(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.get(step)
            step += 1
