#!/usr/bin/env python3
"""Make a virtual environment a complete ament prefix for this package (``make setup``'s last step).

``pip install -e .`` installs the Python code and puts the console scripts in ``bin/``, but writes
none of the ``data_files`` that ``setup.py`` declares and ignores ``setup.cfg``'s
``script_dir=$base/lib/<pkg>``. ROS 2 tools find a package through the ament index instead:
``ament_index_python.get_package_prefix`` looks for ``share/ament_index/resource_index/packages/<pkg>``
under each ``AMENT_PREFIX_PATH`` entry; ``launch_ros`` (``ExecutableInPackage``) and ``ros2 run``
then look for executables in ``<prefix>/lib/<pkg>/``; ``ros2 launch`` walks
``share/<pkg>/`` for launch files without following symlinked folders. This script writes, under
``--prefix``:

* every ``data_files`` entry of ``setup.py`` (read with distutils' ``run_setup``, as colcon does): the
  ament index entry, ``share/<pkg>/package.xml``, ``share/<pkg>/launch/*``, ``share/<pkg>/config/*``
  — real folders holding symlinks to the checkout's files (edits show at once, like the editable
  install; ``--copy`` copies instead);
* ``lib/<pkg>/<name>`` for every ``console_scripts`` entry point: a script running
  ``--python`` (default: this interpreter) on the entry point, like pip's;
* an ``AMENT_PREFIX_PATH`` hook in ``bin/activate`` (bash/zsh): activation prepends the prefix,
  ``deactivate`` restores the previous value. Where neither ``FASTDDS_DEFAULT_PROFILES_FILE`` nor
  ``FASTRTPS_DEFAULT_PROFILES_FILE`` is set, activation also points the one the venv's FastDDS reads (both
  where its version is not found) at the shipped FastDDS profile (``share/<pkg>/config/fastdds_profile.xml``,
  docs/node.md) and ``deactivate`` unsets them again.

Folders it owns (``share/<pkg>``, ``lib/<pkg>``) are rebuilt on each run, so removed files do not
linger. Rerunning is idempotent.

    .venv/bin/python tools/ament_prefix.py --prefix .venv [--source .] [--copy]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOOK_BEGIN = "# >>> sparse_perception: ament prefix (tools/ament_prefix.py) >>>"
HOOK_END = "# <<< sparse_perception: ament prefix <<<"
DEACTIVATE_BEGIN = "    # >>> sparse_perception: restore AMENT_PREFIX_PATH >>>"
DEACTIVATE_END = "    # <<< sparse_perception: restore AMENT_PREFIX_PATH <<<"


def read_setup(source: Path) -> tuple[str, list[tuple[str, list[str]]], list[str]]:
    """Package name, ``data_files`` and ``console_scripts`` declared by ``source/setup.py``."""
    import setuptools  # noqa: F401 - makes `distutils` setuptools' copy (Python 3.12 has none)
    from distutils.core import run_setup

    cwd = os.getcwd()
    os.chdir(source)  # setup.py globs relative to its folder
    try:
        dist = run_setup(str(source / "setup.py"), stop_after="init")
    finally:
        os.chdir(cwd)
    entry_points = dist.entry_points or {}
    return dist.get_name(), list(dist.data_files or []), list(entry_points.get("console_scripts", []))


def _place(src: Path, dest: Path, copy: bool) -> None:
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if copy:
        shutil.copy2(src, dest)
    else:
        dest.symlink_to(src)


def _script(python: str, entry: str) -> tuple[str, str]:
    """(name, text) of the executable for one ``name = module:attr`` entry point."""
    name, _, target = (part.strip() for part in entry.partition("="))
    module, _, attr = target.partition(":")
    if not name or not module or not attr:
        raise ValueError(f"console_scripts entry {entry!r} is not 'name = module:function'")
    text = (f"#!{python}\n# Written by tools/ament_prefix.py for the console script {name!r}.\n"
            f"import sys\nfrom {module} import {attr.split('.')[0]} as _entry\n\n"
            f"if __name__ == '__main__':\n    sys.exit(_entry{''.join('.' + a for a in attr.split('.')[1:])}())\n")
    return name, text


def dds_variables(prefix: Path) -> tuple[str, ...]:
    """The profile variables the prefix's FastDDS reads (``sparse_perception.node.dds_profile``: only
    ``FASTDDS_DEFAULT_PROFILES_FILE`` for FastDDS 3, whose PyPI wheels this venv holds; both where unknown)."""
    if str(REPO) not in sys.path:  # run as a script before (or without) the editable install
        sys.path.insert(0, str(REPO))
    from sparse_perception.node.dds_profile import fastdds_major, profile_variables

    return profile_variables(fastdds_major([prefix]))


def activation_hook(prefix: Path) -> tuple[str, str]:
    """(block appended to ``bin/activate``, block inserted at the top of its ``deactivate``)."""
    profile = prefix / "share" / "sparse_perception" / "config" / "fastdds_profile.xml"
    names = dds_variables(prefix)
    activate = (f'{HOOK_BEGIN}\n_SP_OLD_AMENT_PREFIX_PATH="${{AMENT_PREFIX_PATH-}}"\n'
                f'AMENT_PREFIX_PATH="{prefix}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}"\n'
                f"export AMENT_PREFIX_PATH\n"
                # the shipped FastDDS profile, only where the user set none (sparse_perception/node/dds_profile.py)
                f'if [ -z "${{FASTDDS_DEFAULT_PROFILES_FILE+_}}${{FASTRTPS_DEFAULT_PROFILES_FILE+_}}" ] ; then\n'
                + "".join(f'    {name}="{profile}"\n' for name in names)
                + f"    export {' '.join(names)}\n"
                f"    _SP_SET_DDS_PROFILE=1\nfi\n{HOOK_END}\n")
    deactivate = (f'{DEACTIVATE_BEGIN}\n    if [ -n "${{_SP_OLD_AMENT_PREFIX_PATH+_}}" ] ; then\n'
                  f'        if [ -n "$_SP_OLD_AMENT_PREFIX_PATH" ] ; then\n'
                  f'            AMENT_PREFIX_PATH="$_SP_OLD_AMENT_PREFIX_PATH"\n            export AMENT_PREFIX_PATH\n'
                  f"        else\n            unset AMENT_PREFIX_PATH\n        fi\n"
                  f"        unset _SP_OLD_AMENT_PREFIX_PATH\n    fi\n"
                  f'    if [ -n "${{_SP_SET_DDS_PROFILE-}}" ] ; then\n'
                  f"        unset FASTDDS_DEFAULT_PROFILES_FILE FASTRTPS_DEFAULT_PROFILES_FILE _SP_SET_DDS_PROFILE\n"
                  f"    fi\n{DEACTIVATE_END}\n")
    return activate, deactivate


def _strip(text: str, begin: str, end: str) -> str:
    while begin in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end + "\n")
        text = head + tail
    return text


def install_activation_hook(prefix: Path) -> Path:
    """Add (or refresh) the hook in ``prefix/bin/activate``; :return: the file."""
    path = prefix / "bin" / "activate"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --prefix must be a virtual environment")
    text = _strip(_strip(path.read_text(), HOOK_BEGIN, HOOK_END), DEACTIVATE_BEGIN, DEACTIVATE_END)
    activate, deactivate = activation_hook(prefix)
    anchor = "deactivate () {\n"
    if anchor not in text:
        raise ValueError(f"{path} has no '{anchor.strip()}' line: not a venv activation script this tool knows")
    text = text.replace(anchor, anchor + deactivate, 1)
    path.write_text(text.rstrip("\n") + "\n\n" + activate)
    return path


def install(prefix: Path, source: Path = REPO, python: str | None = None, copy: bool = False,
            hook: bool = True) -> dict[str, list[str]]:
    """Write the ament index entry, share/ and lib/ folders (and the activation hook) under ``prefix``.

    :param prefix: the virtual environment (or any prefix) to complete.
    :param source: the checkout whose ``setup.py``, launch and config files are installed.
    :param python: interpreter in the executables' ``#!`` line (default: this one).
    :param copy: copy the data files instead of symlinking them.
    :param hook: add the ``AMENT_PREFIX_PATH`` hook to ``prefix/bin/activate``.
    :return: what was written, relative to ``prefix``: ``{"data": [...], "lib": [...]}``.
    """
    prefix, source = prefix.resolve(), source.resolve()
    if hook and not (prefix / "bin" / "activate").is_file():  # checked before anything is written
        raise FileNotFoundError(f"{prefix / 'bin' / 'activate'} not found: --prefix must be a virtual environment")
    package, data_files, scripts = read_setup(source)
    if not any(dest == "share/ament_index/resource_index/packages" for dest, _ in data_files):
        raise ValueError(f"{source / 'setup.py'} declares no ament index entry (share/ament_index/...)")
    if not scripts:
        raise ValueError(f"{source / 'setup.py'} declares no console_scripts")
    for owned in (prefix / "share" / package, prefix / "lib" / package):
        if owned.is_symlink() or owned.is_file():
            owned.unlink()
        elif owned.is_dir():
            shutil.rmtree(owned)
    written: dict[str, list[str]] = {"data": [], "lib": []}
    for dest, files in data_files:
        folder = prefix / dest
        if folder.is_symlink():  # a symlinked folder is invisible to ros2launch's os.walk
            folder.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            src = source / name
            if not src.is_file():
                raise FileNotFoundError(f"setup.py data file {name!r} not found in {source}")
            _place(src, folder / src.name, copy)
            written["data"].append(str((folder / src.name).relative_to(prefix)))
    lib = prefix / "lib" / package
    lib.mkdir(parents=True)
    for entry in scripts:
        name, text = _script(python or sys.executable, entry)
        path = lib / name
        path.write_text(text)
        path.chmod(0o755)
        written["lib"].append(str(path.relative_to(prefix)))
    if hook:
        install_activation_hook(prefix)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", type=Path, required=True, help="the virtual environment to complete")
    p.add_argument("--source", type=Path, default=REPO, help="checkout to install from (default: this one)")
    p.add_argument("--python", help="interpreter for lib/<pkg>/ executables (default: this one)")
    p.add_argument("--copy", action="store_true", help="copy data files instead of symlinking them")
    p.add_argument("--no-activate-hook", action="store_true", help="leave bin/activate alone")
    a = p.parse_args(argv)
    try:
        written = install(a.prefix, a.source, a.python, a.copy, not a.no_activate_hook)
    except (OSError, ValueError) as exc:
        print(f"ament_prefix: {exc}", file=sys.stderr)
        return 1
    print(f"ament prefix {a.prefix.resolve()}: {len(written['data'])} data files, "
          f"executables {', '.join(Path(x).name for x in written['lib'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
