"""The one place that knows Ultralytics internals.

Everything else in :mod:`pruning_tools` sees plain :class:`torch.nn.Module` objects and the
functions below. Ultralytics is imported offline (``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL=false``,
``YOLO_CONFIG_DIR`` in a temporary folder unless the caller set one) and is pinned: the contract
test ``test/test_ultralytics_adapter.py`` checks the version and the internals touched here.

Checkpoint format (``save_checkpoint``/``load_checkpoint``) loads with ``torch.load(weights_only=True)``
for dense and pruned models alike: it stores the model YAML (a plain dict), per-layer channel
counts of every convolution / batch norm (the pruned structure), the FP32 ``state_dict`` and a
JSON-ready ``meta`` dict. Loading rebuilds the model from the YAML, resizes the layers to the stored
structure and loads the weights strictly.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

# Ultralytics reads these at import time: never download, install or phone home.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
if "YOLO_CONFIG_DIR" not in os.environ:
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="sp_ultralytics_cfg_")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import ultralytics  # noqa: E402
from ultralytics.nn.modules import C2f, Conv, Detect  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

try:  # C2PSA (YOLO11) also splits its first conv's output
    from ultralytics.nn.modules import C2PSA  # noqa: E402
except ImportError:  # pragma: no cover - guarded by the contract test
    C2PSA = None  # type: ignore[assignment,misc]

#: The Ultralytics version this adapter was written and tested against.
PINNED_ULTRALYTICS = "8.4.190"
#: Model configurations the project supports (any Ultralytics detection YAML of these families).
SUPPORTED_CFGS = ("yolov5n.yaml", "yolov8n.yaml", "yolo11n.yaml")
#: Checkpoint format tag.
CHECKPOINT_FORMAT = "sparse_perception.yolo"
CHECKPOINT_VERSION = 1
#: Loss gains (Ultralytics defaults for detection).
DEFAULT_HYP = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
DEFAULT_CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")


class AdapterError(RuntimeError):
    """A model or checkpoint cannot be handled; the message says why and what to do."""


class TrustPickleRequired(AdapterError, ValueError):
    """A pickled (Ultralytics) checkpoint was given without ``trust_pickle``: CLI misuse (exit 2)."""


def ultralytics_version() -> str:
    """:return: the installed Ultralytics version string."""
    return str(ultralytics.__version__)


def check_version(strict: bool = False) -> bool:
    """Compare the installed Ultralytics with :data:`PINNED_ULTRALYTICS`.

    :param strict: raise instead of returning ``False`` on a mismatch.
    :return: whether the versions match.
    :raises AdapterError: on a mismatch when ``strict``.
    """
    ok = ultralytics_version() == PINNED_ULTRALYTICS
    if not ok and strict:
        raise AdapterError(f"ultralytics {ultralytics_version()} installed, this adapter is pinned to "
                           f"{PINNED_ULTRALYTICS} (requirements/ultralytics.txt)")
    return ok


# --------------------------------------------------------------------------------------- C2f split
class C2fSplit(nn.Module):
    """C2f / C3k2 / C2PSA with the first conv's ``split``/``chunk`` replaced by two convolutions.

    ``torch-pruning``'s dependency tracking fails on the split of a single conv's output; two
    convolutions computing the two halves are mathematically identical and prune cleanly.
    """

    def __init__(self, src: nn.Module, kind: str) -> None:
        super().__init__()
        c = int(src.c)
        self.kind = kind  # "c2f" (y += m(y[-1]) for each m) or "c2psa" (b = m(b))
        cv1: Conv = src.cv1
        c1 = cv1.conv.in_channels
        self.cv0 = Conv(c1, c, 1, 1)
        self.cv1 = Conv(c1, c, 1, 1)
        for half, dst in ((slice(0, c), self.cv0), (slice(c, 2 * c), self.cv1)):
            dst.conv.weight.data.copy_(cv1.conv.weight.data[half])
            dst.bn.weight.data.copy_(cv1.bn.weight.data[half])
            dst.bn.bias.data.copy_(cv1.bn.bias.data[half])
            dst.bn.running_mean.data.copy_(cv1.bn.running_mean.data[half])
            dst.bn.running_var.data.copy_(cv1.bn.running_var.data[half])
            dst.bn.eps, dst.bn.momentum = cv1.bn.eps, cv1.bn.momentum
            dst.act = copy.deepcopy(cv1.act)
        self.m = src.m
        self.cv2 = src.cv2
        # attributes Ultralytics' BaseModel._predict_once and parse bookkeeping use
        for attr in ("f", "i", "type", "np"):
            if hasattr(src, attr):
                setattr(self, attr, getattr(src, attr))
        self.train(src.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "c2psa":
            return self.cv2(torch.cat((self.cv0(x), self.m(self.cv1(x))), 1))
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def replace_c2f(model: nn.Module) -> int:
    """Replace every C2f-family and C2PSA block of ``model.model`` by :class:`C2fSplit` in place.

    :return: number of blocks replaced.
    """
    n = 0
    seq = model.model if hasattr(model, "model") else model
    for i, m in enumerate(seq):
        if isinstance(m, C2f):
            seq[i] = C2fSplit(m, "c2f")
            n += 1
        elif C2PSA is not None and isinstance(m, C2PSA):
            seq[i] = C2fSplit(m, "c2psa")
            n += 1
    return n


def _has_split_blocks(model: nn.Module) -> bool:
    return any(isinstance(m, C2fSplit) for m in model.modules())


# --------------------------------------------------------------------------------------- building
def _prepare(model: DetectionModel, names: Sequence[str] | None) -> DetectionModel:
    nc = int(model.model[-1].nc)
    if names is None:
        names = list(DEFAULT_CLASS_NAMES[:nc]) if nc <= len(DEFAULT_CLASS_NAMES) else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise AdapterError(f"{len(names)} class names given for a model with nc={nc}")
    model.names = {i: str(n) for i, n in enumerate(names)}
    model.args = SimpleNamespace(**DEFAULT_HYP)
    model.criterion = None
    return model


def build_model(cfg: str | dict[str, Any] = "yolov5n.yaml", nc: int = 3,
                class_names: Sequence[str] | None = None, split_c2f: bool = True) -> DetectionModel:
    """Build a randomly initialised Ultralytics detection model from a bundled YAML (no download).

    :param cfg: YAML name such as ``"yolov5n.yaml"`` / ``"yolov8n.yaml"`` / ``"yolo11n.yaml"``, a local
        YAML path, or a model dict (as stored in a checkpoint).
    :param nc: number of classes.
    :param class_names: class names (defaults to Car, Pedestrian, Cyclist for nc=3).
    :param split_c2f: replace C2f-family splits by two convolutions (needed for pruning).
    :return: the model in train mode.
    :raises AdapterError: when the configuration is unknown or is not a detection model.
    """
    if isinstance(cfg, (str, Path)) and Path(cfg).suffix not in (".yaml", ".yml"):
        raise AdapterError(f"model config {cfg!r} is not a YAML name (e.g. {', '.join(SUPPORTED_CFGS)})")
    try:
        model = DetectionModel(copy.deepcopy(cfg) if isinstance(cfg, dict) else str(cfg), nc=nc, verbose=False)
    except FileNotFoundError as exc:
        raise AdapterError(f"unknown model config {cfg!r}: {exc}") from exc
    if type(model.model[-1]) is not Detect:
        raise AdapterError(f"{cfg!r} has head {type(model.model[-1]).__name__}; only plain Detect heads are supported")
    if split_c2f:
        replace_c2f(model)
    return _prepare(model, class_names)


def detect_head(model: nn.Module) -> Detect:
    """:return: the model's Detect head."""
    head = model.model[-1]
    if not isinstance(head, Detect):
        raise AdapterError(f"last layer is {type(head).__name__}, not a Detect head")
    return head


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels must not be pruned: Detect's final output convs and DFL.

    The head's internal 3x3 convs stay prunable (they dominate latency at high sparsity otherwise).
    YOLO11's attention blocks (reshape into heads) are kept whole.
    """
    head = detect_head(model)
    out: list[nn.Module] = []
    for branch_name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        branch = getattr(head, branch_name, None)
        if branch is None:
            continue
        for seq in branch:
            out.append(seq[-1])
    if isinstance(head.dfl, nn.Module):
        out.append(head.dfl)
    for m in model.modules():
        if type(m).__name__ in ("Attention", "PSABlock", "AAttn", "ABlock"):
            out.append(m)
    return out


def prunable_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Convolutions whose output channels may be pruned, in model order (name, module).

    Excludes the ignored output convs/DFL and depthwise convs (they follow their input's pruning).
    """
    ignored = set()
    for m in ignored_layers(model):
        ignored.update(id(x) for x in m.modules())
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and id(m) not in ignored and not (m.groups > 1 and m.groups == m.in_channels):
            out.append((name, m))
    return out


def example_input(imgsz: tuple[int, int] = (384, 1248), batch: int = 1) -> torch.Tensor:
    """:return: a zero input tensor ``(batch, 3, H, W)``."""
    return torch.zeros(batch, 3, int(imgsz[0]), int(imgsz[1]))


def raw_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Inference forward returning the raw ``(B, 4+nc, N)`` tensor (boxes cx,cy,w,h in input pixels, scores)."""
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True)
class HeadOutputs:
    """The Detect head's raw outputs for a batch (before decoding), the soft targets of distillation.

    :param boxes: ``(B, 4 * reg_max, N)`` box-branch logits: per side, ``reg_max`` DFL bin logits
        (``reg_max == 1``: the raw regression values).
    :param scores: ``(B, nc, N)`` class logits (sigmoid gives the per-class probabilities).
    :param reg_max: DFL bins per box side.
    :param raw: what the head returned (the loss criterion's input; opaque outside this module).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    reg_max: int
    raw: Any = field(default=None, repr=False, compare=False)


def head_outputs(model: nn.Module, img: torch.Tensor) -> HeadOutputs:
    """One forward pass of ``model`` on ``img`` (train or eval mode), the head's raw outputs.

    End-to-end heads (one-to-one branch beside the one-to-many one) give their one-to-many outputs,
    the branch the detection loss and NMS inference use.
    """
    out = model(img)
    preds = out[1] if isinstance(out, (tuple, list)) else out
    if not isinstance(preds, dict):
        raise AdapterError(f"head returned {type(preds).__name__}, expected the raw prediction dict")
    o2m = preds.get("one2many", preds)
    return HeadOutputs(boxes=o2m["boxes"], scores=o2m["scores"], reg_max=int(detect_head(model).reg_max), raw=out)


def detection_loss(model: nn.Module, batch: dict[str, torch.Tensor], preds: HeadOutputs | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics' detection loss for a training batch.

    :param batch: ``img`` (B,3,H,W) float 0..1, ``batch_idx`` (n,), ``cls`` (n,1), ``bboxes`` (n,4)
        normalised cx,cy,w,h relative to the batch's H, W.
    :param preds: the model's :func:`head_outputs` on ``batch["img"]`` in train mode, when the caller
        needs them too (distillation): the forward pass is not repeated.
    :return: (loss to backpropagate, detached (box, cls, dfl) loss items).
    """
    if not hasattr(model, "args"):
        model.args = SimpleNamespace(**DEFAULT_HYP)
    if getattr(model, "criterion", None) is None:
        model.criterion = model.init_criterion()
    loss, items = model.loss(batch, preds.raw if preds is not None else None)
    if isinstance(items, dict):
        items = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in items.values()])
    return loss.sum(), items


def reset_criterion(model: nn.Module) -> None:
    """Forget the cached loss (after pruning or moving the model)."""
    model.criterion = None


def class_names(model: nn.Module) -> list[str]:
    """:return: the model's class names in index order."""
    names = getattr(model, "names", None) or {}
    return [str(names[i]) for i in sorted(names)]


# --------------------------------------------------------------------------------------- checkpoints
def _structure(model: nn.Module) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = [int(m.in_channels), int(m.out_channels), int(m.groups)]
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = [int(m.num_features)]
    return out


def _apply_structure(model: nn.Module, structure: dict[str, list[int]], state: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, dims in structure.items():
        m = modules.get(name)
        if m is None:
            raise AdapterError(f"checkpoint layer {name!r} does not exist in the rebuilt model")
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels, m.groups = dims
        elif isinstance(m, nn.BatchNorm2d):
            m.num_features = dims[0]
        for pname, p in list(m.named_parameters(recurse=False)):
            if f"{prefix}{pname}" in state:
                setattr(m, pname, nn.Parameter(torch.empty_like(state[f"{prefix}{pname}"]), p.requires_grad))
        for bname, b in list(m.named_buffers(recurse=False)):
            if b is not None and f"{prefix}{bname}" in state:
                m._buffers[bname] = torch.empty_like(state[f"{prefix}{bname}"])


def _plain(obj: Any) -> Any:
    """Deep copy keeping only types ``torch.load(weights_only=True)`` accepts (others become ``str``)."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None,
                    half: bool = False) -> Path:
    """Write ``model`` (dense or pruned) atomically as a ``weights_only``-loadable checkpoint.

    :param model: a model from :func:`build_model` / :func:`load_checkpoint` (possibly pruned).
    :param path: destination ``.pt`` file (written to a temp file, then moved).
    :param meta: JSON-ready extra information (training command, sparsity, mAP, ...).
    :param half: store floating tensors as FP16 (half the size; loaded back as FP32). Default FP32.
    :return: the path written.
    """
    path = Path(path)
    if not hasattr(model, "yaml"):
        raise AdapterError("model has no Ultralytics YAML: build it with build_model() or load_checkpoint()")
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to(dtype).clone() if v.is_floating_point() else v.detach().clone()
             for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "yaml": _plain(model.yaml),
        "nc": int(detect_head(model).nc),
        "class_names": class_names(model),
        "split_c2f": _has_split_blocks(model),
        "structure": _structure(model),
        "state_dict": state,
        "storage": "fp16" if half else "fp32",
        "meta": _plain(dict(meta or {})),
        "versions": {"torch": str(torch.__version__), "ultralytics": ultralytics_version()},
    }
    _atomic_save(payload, path)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[DetectionModel, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    :return: (model in eval mode, meta dict).
    :raises FileNotFoundError: when the file is missing.
    :raises AdapterError: when the file is not in this format (an Ultralytics ``.pt`` needs
        :func:`load_user_checkpoint`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report with the file name and what to do
        raise AdapterError(f"{path}: not a weights_only checkpoint of this project ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}); Ultralytics .pt files load with "
                           f"load_user_checkpoint(path, trust_pickle=True)") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise AdapterError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (key 'format' missing or different)")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise AdapterError(f"{path}: checkpoint version {payload['version']} is newer than supported "
                           f"{CHECKPOINT_VERSION}")
    model = build_model(payload["yaml"], nc=int(payload["nc"]), class_names=payload["class_names"],
                        split_c2f=bool(payload["split_c2f"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    _apply_structure(model, payload["structure"], state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AdapterError(f"{path}: state dict does not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    reset_criterion(model)
    model.eval()
    return model, dict(payload.get("meta") or {})


def load_user_checkpoint(path: str | Path, trust_pickle: bool = False,
                         nc: int | None = None) -> tuple[DetectionModel, dict[str, Any]]:
    """Load a user's checkpoint: this project's format, or an Ultralytics ``.pt`` (pickled model).

    Ultralytics ``.pt`` files pickle whole Python objects; unpickling can run code, so it happens
    only with ``trust_pickle=True`` and only for files you trust.

    :param path: local file (never downloaded).
    :param trust_pickle: allow full unpickling of an Ultralytics checkpoint.
    :param nc: expected number of classes (checked when given).
    :return: (model in eval mode with C2f splits replaced, meta dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        model, meta = load_checkpoint(path)
    except AdapterError:
        if not trust_pickle:
            raise TrustPickleRequired(f"{path} is a pickled (Ultralytics) checkpoint; unpickling can run code: "
                                      f"pass --trust-pickle if you trust the file (or convert it once with "
                                      f"`pruning-tools import-model {path.name} --out DST.pt --trust-pickle`)") from None
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        obj = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
        if not isinstance(obj, DetectionModel):
            raise AdapterError(f"{path}: contains {type(obj).__name__}, not an Ultralytics DetectionModel "
                               f"(original YOLOv5-repository checkpoints are not supported)") from None
        model = obj.float()
        if type(model.model[-1]) is not Detect:
            raise AdapterError(f"{path}: head {type(model.model[-1]).__name__} is not a plain Detect head")
        replace_c2f(model)
        _prepare(model, [str(v) for _, v in sorted(dict(getattr(model, "names", {}) or {}).items())] or None)
        meta = {"source": str(path), "family": model_family(model)}
        model.eval()
    if nc is not None and int(detect_head(model).nc) != nc:
        raise AdapterError(f"{path}: model has nc={detect_head(model).nc}, expected {nc}")
    return model, meta


def model_family(model_or_yaml: Any) -> str:
    """The Ultralytics family and scale of a model (or its YAML dict), read from its layers.

    :return: e.g. ``"yolo11n"``, ``"yolov8n"``, ``"yolov5nu"``; ``"unknown"`` when not recognised.
    """
    y = model_or_yaml if isinstance(model_or_yaml, dict) else getattr(model_or_yaml, "yaml", None)
    if not isinstance(y, dict):
        return "unknown"
    blocks = {str(layer[2]).rsplit(".", 1)[-1] for part in ("backbone", "head") for layer in (y.get(part) or [])
              if isinstance(layer, (list, tuple)) and len(layer) > 2}
    scale = str(y.get("scale") or "")
    if not scale:  # the YAML name carries it (yolov8n.yaml), as Ultralytics' guess_model_scale reads it
        import re

        m = re.search(r"yolo(?:v?\d+)([nslmx])", str(y.get("yaml_file") or ""))
        scale = m.group(1) if m else ""
    if blocks & {"C3k2", "C2PSA"}:
        return f"yolo11{scale}"
    if "C2f" in blocks:
        return f"yolov8{scale}"
    if "C3" in blocks:
        return f"yolov5{scale}u"
    return "unknown"


def import_model(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Convert an Ultralytics ``.pt`` (YOLOv5u / YOLOv8 / YOLO11, any class count) once into this
    project's ``weights_only`` format, after which no unpickling is needed.

    :param src: the Ultralytics checkpoint (e.g. ``runs/detect/train/weights/best.pt``).
    :param dst: the project checkpoint to write.
    :param trust_pickle: required for a pickled source (see :func:`load_user_checkpoint`).
    :return: the meta recorded: source, source_sha256, family, class_names, nc.
    """
    from sparse_perception.runtime.zoo import sha256_file

    src = Path(src)
    model, _ = load_user_checkpoint(src, trust_pickle=trust_pickle)
    meta = {"source": src.name, "source_sha256": sha256_file(src), "family": model_family(model),
            "class_names": class_names(model), "nc": int(detect_head(model).nc),
            "imported_with": {"ultralytics": ultralytics_version(), "torch": str(torch.__version__)}}
    save_checkpoint(model, dst, meta)
    return meta


# --------------------------------------------------------------------------------------- export
class ExportDFL(nn.Module):
    """Same result as Ultralytics' DFL (softmax expectation over ``reg_max`` bins), export friendly.

    Ultralytics transposes then soft-maxes over a non-last axis and applies a 1x1 conv; ONNX Runtime
    CPU spends ~3.5 ms on that at 384x1248. Reducing over the bin axis in place (max-shifted exp,
    weighted sum / sum) gives the same values (|diff| < 1e-5) in ~0.2 ms.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = int(reg_max)
        self.register_buffer("proj", torch.arange(self.reg_max, dtype=torch.float32).view(1, 1, self.reg_max, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        x = x.view(b, 4, self.reg_max, a)
        e = (x - x.amax(2, keepdim=True)).exp()
        return (e * self.proj.to(x.dtype)).sum(2) / e.sum(2)


def fused_copy(model: nn.Module) -> nn.Module:
    """:return: an eval-mode deep copy with Conv+BN fused (for export and latency)."""
    m = copy.deepcopy(model).float().eval()
    m.fuse(verbose=False)
    return m


def export_onnx(model: nn.Module, path: str | Path, imgsz: tuple[int, int] = (384, 1248),
                class_names: Sequence[str] | None = None, half: bool = False, opset: int = 17,
                extra_metadata: dict[str, Any] | None = None) -> Path:
    """Export to ONNX with Ultralytics' raw output layout ``(1, 4+nc, N)`` (cx,cy,w,h pixels, class scores).

    Input ``images`` (1,3,H,W) float RGB 0..1; output ``output0``. Metadata like Ultralytics'
    export (``names`` as ``str(dict)``, ``stride``, ``imgsz``, ``task``, ``batch``) plus ``extra_metadata``.

    :param half: export FP16 weights and I/O (needs the FP16 conv kernels of the exporting torch).
    :return: the path written (atomically).
    """
    import onnx  # local: only export needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = fused_copy(model)
    head = detect_head(m)
    head.export, head.format, head.dynamic = True, "onnx", False
    if int(head.reg_max) > 1:
        head.dfl = ExportDFL(int(head.reg_max))
    for p in m.parameters():
        p.requires_grad_(False)
    names = list(class_names) if class_names is not None else class_names_fn(model)
    if len(names) != int(head.nc):
        raise AdapterError(f"{len(names)} class names for a model with nc={head.nc}")
    x = example_input(imgsz)
    if half:
        m, x = m.half(), x.half()
    with torch.no_grad():
        y = m(x)
    if tuple(y.shape[:2]) != (1, 4 + int(head.nc)):
        raise AdapterError(f"unexpected export output shape {tuple(y.shape)}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with warnings.catch_warnings():  # legacy-exporter deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(tmp), opset_version=opset, input_names=["images"],
                          output_names=["output0"], do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(tmp))
    meta = {
        "description": "sparse_perception YOLO (Ultralytics layout)",
        "author": "sparse_perception",
        "version": ultralytics_version(),
        "stride": int(max(m.stride)),
        "task": "detect",
        "batch": 1,
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
        "names": {i: n for i, n in enumerate(names)},
        "channels": 3,
        "end2end": False,
        "half": bool(half),
        **(extra_metadata or {}),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = str(k), str(v)
    if getattr(proto, "ir_version", 0) > 10:
        proto.ir_version = 10
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


class_names_fn = class_names  # alias used where a parameter shadows the name
