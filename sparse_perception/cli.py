"""``sparse-perception``: online tools (replay, record, detect on images).

Each subcommand lives in its own module with a ``main(argv) -> int``.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("sparse_perception.tools.replay", "publish a rosbag2's topics with the original timing"),
    "record": ("sparse_perception.tools.recorder", "write received topics into a rosbag2"),
    "node": ("sparse_perception.node.detector_node", "run the detector lifecycle node"),
}


def usage() -> str:
    lines = ["usage: sparse-perception COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sparse-perception: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
