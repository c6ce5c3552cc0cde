"""The engine zoo: one manifest that describes every deployable artifact.

``pruning-tools export`` writes a zoo folder with ``manifest.json`` (YAML is accepted
too); the detector node reads only this manifest. Every artifact is listed with its
sparsity level, precision, backend, input shape, class names, accuracy (overall and
per driving condition), measured latency, size and sha256.

Layout of a manifest (``schema_version`` 1)::

    schema_version: 1
    created: "2026-11-24T12:00:00+00:00"
    model_family: yolov5n
    class_names: [Car, Pedestrian, Cyclist]
    data: {source: generated, root: ..., split: test}   # free-form provenance
    artifacts:
      - level: s75                 # level name: [A-Za-z0-9_-] and inner dots (x1.5), not "auto" (reserved)
        sparsity: 0.75             # fraction of parameters removed, [0, 1)
        precision: int8            # fp32 | fp16 | int8
        backend: onnxruntime       # onnxruntime | tensorrt
        path: s75/model_int8.onnx  # relative to the manifest's folder and inside it (symlinks resolved)
        sha256: <64 hex>
        size_bytes: 1234
        input_shape: [1, 3, 384, 1248]
        class_names: [Car, Pedestrian, Cyclist]
        selected: true             # the bisection's choice for (level, backend): at most one each
        map50_95: 0.41             # or null when not measured
        map50: 0.70
        map_by_condition: {day_clear: {map50_95: .., map50: ..}, ...}
        latency_ms: {median: 12.3, p95: 13.0, backend: onnxruntime, device: "cpu: <model>", threads: 2}
        source_checkpoint: runs/prune/full_s75/best.pt
        created: "2026-11-24T12:00:00+00:00"
        fallback_layers: [model.24.m.0]   # layers kept in higher precision (int8 only)
        accepted: true             # optional: within the search's mAP-drop bound (false: listed, not admitted)
        map_drop_points: 0.4       # optional: mAP50-95 drop vs the level's FP32 artifact, in points
        tensorrt: {version: "10.x", gpu: "NVIDIA H100", compute_capability: "9.0"}  # tensorrt only
        param_sparsity: 0.75       # optional: fraction of parameters removed (the level's measured figure)
        speedup_target: 2.0        # optional: the run's speed-up target of a latency level (x2)
        speedup_vs_dense: 1.93     # optional, selected artifacts: dense latency / this one's, timed
                                   #   interleaved with every selected engine (ladder.timing)
    ladder:                        # optional (pruning-tools export writes it; older zoos have none)
      rule: "..."                  # the monotone-ladder rule, in words
      timing: {method: ..., runs: 20, warmup: 5, threads: 2}
      levels:                      # the kept levels, dense first, by accuracy
        - {level: x2, backend: onnxruntime, precision: int8, map50_95: .., latency_ms: {...},
           speedup_vs_dense: 1.93, param_sparsity: 0.61, speedup_target: 2.0, reason: ...}
      excluded:                    # levels left out: not faster than a more accurate kept level
        - {level: s50, backend: onnxruntime, ..., reason: ..., beaten_by: dense, artifacts: [...]}
    conditions:                    # optional (issue 25): levels tailored to driving conditions
      default: fed_global          # level for a condition the map does not name (optional)
      levels: {night_clear: fed_night, night_rain: fed_night, day_fog: fed_fog, ...}  # condition key -> level
      groups:                      # optional provenance: one entry per condition group
        - {name: night, level: fed_night, mix: {night_clear: 0.5, ...}, ...}

The ``conditions`` block is what ``policy_path: manifest`` follows in the node
(:mod:`sparse_perception.runtime.manifest_policy`); its keys are
:data:`sparse_perception.runtime.conditions.CONDITION_KEYS` and every level it names must have an
artifact in ``artifacts`` (so it is sha256-checked on load like every other). Manifests without it
load as before.

Errors name the manifest file and the field path (``artifacts[2].sha256``).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sparse_perception.runtime.conditions import CONDITION_KEYS

SCHEMA_VERSION = 1
#: level names a manifest may not use: ``auto`` means policy mode for ``~/set_sparsity`` and ``sparsity_level``
RESERVED_LEVELS = ("auto",)
PRECISIONS = ("fp32", "fp16", "int8")
#: a level name: also a folder name in the zoo, so dots only between other characters (``x1.5``, never ``..``)
LEVEL_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
LEVEL_RE = re.compile(LEVEL_PATTERN)
BACKENDS = ("onnxruntime", "tensorrt")

_MAP = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_MAP_PAIR = {
    "type": "object",
    "properties": {"map50_95": _MAP, "map50": _MAP},
    "required": ["map50_95", "map50"],
}
ARTIFACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["level", "sparsity", "precision", "backend", "path", "sha256", "input_shape", "class_names"],
    "properties": {
        "level": {"type": "string", "pattern": LEVEL_PATTERN},
        "sparsity": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "precision": {"enum": list(PRECISIONS)},
        "backend": {"enum": list(BACKENDS)},
        "path": {"type": "string", "minLength": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size_bytes": {"type": "integer", "minimum": 0},
        "input_shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 4, "maxItems": 4},
        "class_names": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "selected": {"type": "boolean"},
        "accepted": {"type": "boolean"},
        "map_drop_points": {"type": ["number", "null"]},
        "map50_95": _MAP,
        "map50": _MAP,
        "map_by_condition": {"type": "object", "additionalProperties": _MAP_PAIR},
        # real-frame AP (pruning-tools export --real-eval): data, n_images, map_kitti, classes{name: ap_kitti, ...}
        "real": {"type": "object", "properties": {"n_images": {"type": "integer", "minimum": 1},
                                                  "classes": {"type": "object"}}},
        "latency_ms": {
            "type": "object",
            "required": ["median", "backend", "device"],
            "properties": {
                "median": {"type": "number", "exclusiveMinimum": 0},
                "p95": {"type": "number", "exclusiveMinimum": 0},
                "backend": {"type": "string"},
                "device": {"type": "string"},
                "threads": {"type": "integer", "minimum": 1},
            },
        },
        "source_checkpoint": {"type": "string"},
        "created": {"type": "string"},
        "fallback_layers": {"type": "array", "items": {"type": "string"}},
        "tensorrt": {
            "type": "object",
            "required": ["version", "gpu"],
            "properties": {"version": {"type": "string"}, "gpu": {"type": "string"},
                           "compute_capability": {"type": "string"}},
        },
        "param_sparsity": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "speedup_target": {"type": "number", "exclusiveMinimum": 0},
        "speedup_vs_dense": {"type": "number", "exclusiveMinimum": 0},
    },
}
_LADDER_ROW: dict[str, Any] = {
    "type": "object",
    "required": ["level", "backend", "reason"],
    "properties": {
        "level": {"type": "string", "pattern": LEVEL_PATTERN},
        "backend": {"enum": list(BACKENDS)},
        "precision": {"enum": list(PRECISIONS)},
        "map50_95": _MAP,
        "latency_ms": {"type": "object", "required": ["median"],
                       "properties": {"median": {"type": "number", "exclusiveMinimum": 0}}},
        "speedup_vs_dense": {"type": "number", "exclusiveMinimum": 0},
        "param_sparsity": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "speedup_target": {"type": "number", "exclusiveMinimum": 0},
        "reason": {"type": "string"},
        "beaten_by": {"type": ["string", "null"]},
        "artifacts": {"type": "array", "items": {"type": "object"}},
    },
}
LADDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["levels", "excluded"],
    "properties": {
        "rule": {"type": "string"},
        "timing": {"type": "object"},
        "levels": {"type": "array", "items": _LADDER_ROW},
        "excluded": {"type": "array", "items": _LADDER_ROW},
    },
}
_LEVEL_NAME = {"type": "string", "pattern": LEVEL_PATTERN}
CONDITIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["levels"],
    "additionalProperties": False,
    "properties": {
        "default": _LEVEL_NAME,
        "levels": {"type": "object", "propertyNames": {"enum": list(CONDITION_KEYS)},
                   "additionalProperties": _LEVEL_NAME, "minProperties": 1},
        "groups": {"type": "array", "items": {
            "type": "object", "required": ["name", "level"],
            "properties": {"name": {"type": "string", "minLength": 1}, "level": _LEVEL_NAME,
                           "mix": {"type": "object", "propertyNames": {"enum": list(CONDITION_KEYS)},
                                   "additionalProperties": {"type": "number", "minimum": 0}}}}},
    },
}
MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema_version", "class_names", "artifacts"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "created": {"type": "string"},
        "model_family": {"type": "string"},
        "class_names": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "data": {"type": "object"},
        "artifacts": {"type": "array", "items": ARTIFACT_SCHEMA, "minItems": 1},
        "ladder": LADDER_SCHEMA,
        "conditions": CONDITIONS_SCHEMA,
    },
}


class ManifestError(ValueError):
    """A manifest that cannot be used: unreadable, invalid field, or tampered artifact."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def external_data_files(path: str | Path) -> list[str]:
    """Locations (relative to the ONNX's folder) of the external-data files an ONNX model's tensors live in."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locs: set[str] = set()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locs.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locs)


def artifact_sha256(path: str | Path) -> str:
    """The digest a manifest lists for an ONNX artifact: :func:`sha256_file` of the file when its weights
    are inside it; with external data, a SHA-256 over the file's digest and every external file's
    (location and digest, sorted), so a changed weights file fails the check too.

    :raises ManifestError: an external-data location outside the ONNX's folder or missing.
    """
    path = Path(path)
    own = sha256_file(path)
    if path.suffix != ".onnx":
        return own
    try:
        locs = external_data_files(path)
    except Exception as exc:  # noqa: BLE001 - not a parsable ONNX: the plain digest (the loader says what is wrong)
        del exc
        return own
    if not locs:
        return own
    digest = hashlib.sha256(f"onnx+external-data\n{own}\n".encode())
    for loc in locs:
        target = contained_path(path.parent, loc, f"{path}: external data")
        if not target.is_file():
            raise ManifestError(f"{path}: external data file {loc!r} is missing ({target})")
        digest.update(f"{loc}\n{sha256_file(target)}\n".encode())
    return digest.hexdigest()


def onnx_precision(path: str | Path) -> str | None:
    """``int8`` / ``fp16`` / ``fp32``: what the file is (:func:`sparse_perception.runtime.backends.onnx_precision`),
    to compare with a manifest's ``precision`` field; None when it does not parse as ONNX (the backend then
    says what is wrong)."""
    from sparse_perception.runtime.backends.onnx_precision import onnx_precision as file_precision

    try:
        return file_precision(path)
    except Exception:  # noqa: BLE001 - protobuf DecodeError and friends
        return None


def _field_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


@dataclass(frozen=True)
class Artifact:
    """One engine file listed in the manifest (see the module docstring for fields)."""

    level: str
    sparsity: float
    precision: str
    backend: str
    path: Path  # absolute
    sha256: str
    input_shape: tuple[int, int, int, int]
    class_names: tuple[str, ...]
    selected: bool = True
    map50_95: float | None = None
    map50: float | None = None
    map_by_condition: dict[str, dict[str, float | None]] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)
    fallback_layers: tuple[str, ...] = ()
    tensorrt: dict[str, str] | None = None
    param_sparsity: float | None = None
    speedup_target: float | None = None
    speedup_vs_dense: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def verify(self) -> None:
        """Check the file exists and its sha256 matches the manifest.

        :raises ManifestError: naming the file, expected and actual digests.
        """
        if not self.path.is_file():
            raise ManifestError(f"artifact of level {self.level!r} is missing: {self.path}")
        actual = artifact_sha256(self.path)
        if actual != self.sha256:
            raise ManifestError(
                f"artifact {self.path} (level {self.level!r}) failed its sha256 check: manifest says "
                f"{self.sha256}, file has {actual}; refusing a tampered or corrupt engine"
                " (the digest covers the ONNX's external data files too)"
            )
        if self.backend == "onnxruntime" and self.path.suffix == ".onnx":
            found = onnx_precision(self.path)
            if found is not None and found != self.precision:
                raise ManifestError(f"artifact {self.path} (level {self.level!r}) is listed as precision "
                                    f"{self.precision!r} but the file is {found!r}")


@dataclass(frozen=True)
class Manifest:
    """A validated engine manifest."""

    path: Path
    class_names: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def root(self) -> Path:
        """Folder that artifact paths are relative to."""
        return self.path.parent

    def levels(self, backend: str | None = None) -> list[str]:
        """Level names (optionally only those with an artifact on ``backend``), by sparsity."""
        arts = [a for a in self.artifacts if backend is None or a.backend == backend]
        seen: dict[str, float] = {}
        for a in arts:
            seen.setdefault(a.level, a.sparsity)
        return sorted(seen, key=lambda lv: (seen[lv], lv))

    def select(self, level: str, backend: str, precision: str | None = None) -> Artifact:
        """The artifact to run for ``level`` on ``backend``.

        With ``precision`` given, that precision; otherwise the one marked ``selected``
        (the bisection's choice), else the first listed.

        :raises ManifestError: when no artifact matches, naming what is available.
        """
        cands = [a for a in self.artifacts if a.level == level and a.backend == backend]
        if precision is not None:
            cands = [a for a in cands if a.precision == precision]
        if not cands:
            have = sorted({(a.level, a.backend, a.precision) for a in self.artifacts})
            raise ManifestError(
                f"{self.path}: no artifact for level={level!r} backend={backend!r}"
                + (f" precision={precision!r}" if precision else "") + f"; available: {have}"
            )
        chosen = [a for a in cands if a.selected]
        return (chosen or cands)[0]

    @property
    def ladder(self) -> dict[str, Any]:
        """The manifest's ``ladder`` block (``{}`` in zoos written before it existed)."""
        return dict(self.raw.get("ladder") or {})

    @property
    def condition_levels(self) -> dict[str, str]:
        """The ``conditions.levels`` map, condition key -> level (``{}`` in zoos without one)."""
        return dict((self.raw.get("conditions") or {}).get("levels") or {})

    @property
    def condition_default(self) -> str | None:
        """The ``conditions.default`` level (for a condition the map does not name), None when absent."""
        return (self.raw.get("conditions") or {}).get("default")

    def level_for(self, condition_key: str) -> str | None:
        """The level the manifest tailors to ``condition_key`` (``"night_fog"``): its ``conditions.levels``
        entry, else ``conditions.default``; None when the manifest names neither."""
        return self.condition_levels.get(condition_key, self.condition_default)

    def excluded(self, backend: str | None = None) -> list[dict[str, Any]]:
        """Levels the export left out of the zoo (``ladder.excluded``), optionally on one backend."""
        rows = self.ladder.get("excluded") or []
        return [r for r in rows if backend is None or r.get("backend") == backend]


def validate_manifest_dict(data: Any, source: str = "<manifest>") -> None:
    """Validate a manifest dict against the schema.

    :raises ManifestError: with the offending field's path, e.g. ``artifacts[1].precision``.
    """
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ManifestError(f"{source}: invalid field {_field_path(err)}: {err.message}")
    for i, art in enumerate(data["artifacts"]):  # the fields the loader reads ('real' AP may be NaN: no GT)
        _check_finite({k: v for k, v in art.items() if k != "real"}, source, f"artifacts[{i}]")
    _check_finite(data.get("ladder") or {}, source, "ladder")
    _check_finite(data.get("conditions") or {}, source, "conditions")
    names, shape = list(data["class_names"]), list(data["artifacts"][0]["input_shape"])
    levels: dict[tuple[str, str, str], int] = {}
    selected: dict[tuple[str, str], int] = {}
    for i, art in enumerate(data["artifacts"]):
        if list(art["class_names"]) != names:  # one zoo, one label map (any length: the pipeline is class-agnostic)
            raise ManifestError(f"{source}: invalid field artifacts[{i}].class_names: {capped(art['class_names'])} "
                                f"differs from the zoo's class_names {capped(names)}; every level of a zoo must "
                                "detect the same classes in the same order")
        if list(art["input_shape"]) != shape:
            raise ManifestError(f"{source}: invalid field artifacts[{i}].input_shape: {art['input_shape']} differs "
                                f"from artifacts[0]'s {shape}; every level of a zoo must take the same input")
        if art["level"] in RESERVED_LEVELS:
            raise ManifestError(f"{source}: invalid field artifacts[{i}].level: {art['level']!r} is reserved "
                                f"(it selects the policy's auto mode); reserved names: {list(RESERVED_LEVELS)}")
        key = (art["level"], art["backend"], art["precision"])
        if key in levels:
            raise ManifestError(f"{source}: invalid field artifacts[{i}]: duplicate of artifacts[{levels[key]}] {key}")
        levels[key] = i
        if art.get("selected", False):
            pair = (art["level"], art["backend"])
            if pair in selected:
                raise ManifestError(f"{source}: invalid field artifacts[{i}].selected: artifacts[{selected[pair]}] "
                                    f"is already selected for level {pair[0]!r} on {pair[1]}; "
                                    "mark exactly one per (level, backend)")
            selected[pair] = i
        if art["backend"] == "tensorrt" and "tensorrt" not in art:
            raise ManifestError(f"{source}: invalid field artifacts[{i}].tensorrt: required for backend tensorrt")
    ladder = data.get("ladder") or {}
    listed = {(a["level"], a["backend"]) for a in data["artifacts"]}
    for i, row in enumerate(ladder.get("levels", [])):
        if (row["level"], row["backend"]) not in listed:
            raise ManifestError(f"{source}: invalid field ladder.levels[{i}]: level {row['level']!r} on "
                                f"{row['backend']} has no artifact")
    for i, row in enumerate(ladder.get("excluded", [])):
        if (row["level"], row["backend"]) in listed:
            raise ManifestError(f"{source}: invalid field ladder.excluded[{i}]: level {row['level']!r} on "
                                f"{row['backend']} is excluded from the ladder but still listed in artifacts")
    _check_conditions(data.get("conditions"), {a["level"] for a in data["artifacts"]}, source)


def _check_conditions(block: dict[str, Any] | None, have: set[str], source: str) -> None:
    """Every level the ``conditions`` block names must have an artifact (the schema checked the rest)."""
    if not block:
        return
    named = [("conditions.default", block["default"])] if "default" in block else []
    named += [(f"conditions.levels.{k}", v) for k, v in block["levels"].items()]
    named += [(f"conditions.groups[{i}].level", g["level"]) for i, g in enumerate(block.get("groups", []))]
    for where, level in named:
        if level not in have:
            raise ManifestError(f"{source}: invalid field {where}: level {capped(level)!r} has no artifact in this "
                                f"zoo (levels: {sorted(have)})")


#: longest value an error message quotes (a hostile manifest must not make a 70 MB log line)
QUOTE_CHARS = 200


def capped(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``value`` (a string as is, anything else as its repr) cut to ``limit`` characters for an error message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_finite(value: Any, source: str, where: str) -> None:
    """NaN and inf parse from JSON (``NaN``) and YAML (``.nan``) but pass jsonschema's range checks: refuse them
    (``where`` names the field, as in ``artifacts[1].sparsity``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"{source}: invalid field {where or '<root>'}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, source, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, source, f"{where}[{i}]")


def contained_path(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` with symlinks resolved, refused unless it lies inside ``root`` (itself resolved).

    Checked before any file is opened, so a manifest cannot point the loader (or its sha256
    check) at files outside its folder with ``..``, an absolute path or a symlink.

    :raises ManifestError: naming ``where``, the path and the folder.
    """
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise ManifestError(f"{where}: {rel!r} resolves to {target}, outside the manifest's folder {base}; "
                            "artifact paths must stay inside it")
    return target


def load_manifest(path: str | Path, verify: bool = False) -> Manifest:
    """Read and validate a manifest (JSON or YAML).

    :param path: the manifest file.
    :param verify: also check every artifact's sha256 (the node verifies only the
        artifacts it loads, via :meth:`Artifact.verify`).
    :raises ManifestError: on unreadable files, schema violations or failed checks.
    """
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read engine manifest {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else safe_load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError, ValueError) as exc:
        raise ManifestError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"{capped(str(exc), 500)}") from exc
    validate_manifest_dict(data, str(path))
    arts = []
    for i, a in enumerate(data["artifacts"]):
        arts.append(Artifact(
            level=a["level"], sparsity=float(a["sparsity"]), precision=a["precision"], backend=a["backend"],
            path=contained_path(path.parent, a["path"], f"{path}: invalid field artifacts[{i}].path"),
            sha256=a["sha256"],
            input_shape=tuple(a["input_shape"]), class_names=tuple(a["class_names"]),
            selected=bool(a.get("selected", True)), map50_95=a.get("map50_95"), map50=a.get("map50"),
            map_by_condition=dict(a.get("map_by_condition", {})), latency_ms=dict(a.get("latency_ms", {})),
            fallback_layers=tuple(a.get("fallback_layers", ())), tensorrt=a.get("tensorrt"),
            param_sparsity=_opt_float(a.get("param_sparsity")), speedup_target=_opt_float(a.get("speedup_target")),
            speedup_vs_dense=_opt_float(a.get("speedup_vs_dense")), raw=a,
        ))
    manifest = Manifest(path=path, class_names=tuple(data["class_names"]), artifacts=tuple(arts), raw=data)
    if verify:
        for art in manifest.artifacts:
            art.verify()
    return manifest


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses YAML aliases (``*ref``): nested aliases expand exponentially ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases (*{event.anchor}) are not accepted{event.start_mark}: "
                                 "write the value out (nested aliases can expand to gigabytes)")
        return super().compose_node(parent, index)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases (configs and manifests need none; alias bombs are refused).

    :raises yaml.YAMLError: invalid YAML or an alias, with a short message.
    """
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def write_manifest(path: str | Path, data: dict[str, Any]) -> Path:
    """Validate ``data`` and write it atomically as JSON (temp file, then rename)."""
    path = Path(path)
    validate_manifest_dict(data, str(path))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
