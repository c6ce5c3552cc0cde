"""``sparse-perception``: online tools (replay, record, detect on images).

Each subcommand lives in its own module with a ``main(argv) -> int``; :func:`dispatch` is the
dispatcher ``pruning-tools`` uses too.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("sparse_perception.tools.replay", "publish a rosbag2's topics with the original timing"),
    "record": ("sparse_perception.tools.recorder", "write received topics into a rosbag2"),
    "node": ("sparse_perception.node.detector_node", "run the detector lifecycle node"),
}


def dispatch(prog: str, commands: Mapping[str, tuple[str, str]], usage: Callable[[], str],
             argv: Sequence[str] | None = None, before_import: Callable[[], None] | None = None) -> int:
    """Run ``PROG COMMAND ARGS``: import the command's module only then and call its ``main(ARGS)``.

    :param commands: command -> (module, one-line help).
    :param usage: the usage text (printed for ``-h``/``--help``, no command or an unknown one).
    :param argv: arguments without the program name (``sys.argv[1:]`` when None).
    :param before_import: called once the command is known, before its module is imported.
    :return: the command's exit code; 0 for ``--help``; 2 without a command or for an unknown one.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"{prog}: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if before_import is not None:
        before_import()
    module = importlib.import_module(commands[name][0])
    return int(module.main(rest) or 0)


def usage() -> str:
    lines = ["usage: sparse-perception COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return dispatch("sparse-perception", COMMANDS, usage, argv)


if __name__ == "__main__":
    sys.exit(main())
