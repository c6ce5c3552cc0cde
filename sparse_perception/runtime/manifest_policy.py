"""A level chooser that follows the engine manifest's ``conditions`` map (issue 25: levels tailored to conditions).

A zoo exported from a federated run with condition groups (``pruning-tools federated`` then
``pruning-tools export``) lists one level per condition group next to the single global level, and
its manifest maps each driving condition to the level made for it::

    conditions: {default: fed_global, levels: {night_clear: fed_night, day_fog: fed_fog, ...}}

:class:`ManifestPolicy` is that map as a policy: :meth:`ManifestPolicy.decide` returns the level
tailored to the current condition (received on ``driving_condition`` or estimated from the camera;
the node feeds it either way), the default level for a condition the map does not name, and keeps
the current level when the manifest names neither. It is a :class:`~sparse_perception.runtime.policy.SparsityPolicy`
(kind ``manifest``), so the node's :class:`~sparse_perception.runtime.policy.PolicyController`
(hysteresis, cooldown, manual/auto) drives it like a trained policy: ``policy_path: manifest``.
"""
from __future__ import annotations

from typing import Any

from sparse_perception.runtime.conditions import Condition
from sparse_perception.runtime.policy import Load, SparsityPolicy
from sparse_perception.runtime.zoo import Manifest, ManifestError

__all__ = ["MANIFEST_POLICY", "ManifestPolicy"]

#: the ``policy_path`` value that selects this policy (the node's engine manifest is the policy file)
MANIFEST_POLICY = "manifest"


class ManifestPolicy(SparsityPolicy):
    """The manifest's condition -> level map as a sparsity policy.

    :param levels_by_condition: condition key -> level.
    :param default: the level for any other condition (None: keep the current level).
    :param meta: extra metadata (the controller reads ``frame_period_ms`` when present).
    :raises ValueError: an empty map without a default.
    """

    def __init__(self, levels_by_condition: dict[str, str], default: str | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if not levels_by_condition and default is None:
            raise ValueError("a manifest policy needs a conditions -> level map or a default level")
        self.levels_by_condition = dict(levels_by_condition)
        self.default = default
        levels = list(dict.fromkeys([*([default] if default is not None else []), *levels_by_condition.values()]))
        super().__init__(levels, "manifest", meta={"frame_period_ms": 100.0, **(meta or {})})

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "ManifestPolicy":
        """The policy of a loaded manifest's ``conditions`` block.

        :raises ManifestError: the manifest has no ``conditions`` block (naming the file).
        """
        if not manifest.condition_levels:
            raise ManifestError(f"{manifest.path}: no 'conditions' block (condition -> level map), so "
                                "policy_path 'manifest' has nothing to follow; export a zoo from a federated run "
                                "with condition groups, or give a policy file from `pruning-tools train-policy`")
        return cls(manifest.condition_levels, manifest.condition_default, meta={"manifest": str(manifest.path)})

    def decide(self, condition: Condition, current_level: str | None = None, load: Load | None = None) -> str:
        """The level the manifest tailors to ``condition`` (``load`` is not used: the map is per condition)."""
        level = self.levels_by_condition.get(condition.key, self.default)
        if level is not None:
            return level
        return current_level if current_level in self.levels else self.levels[0]
