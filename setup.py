"""ament_python package `sparse_perception` (with the offline `pruning_tools`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sparse_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["sparse_perception", "sparse_perception.*", "pruning_tools", "pruning_tools.*"]),
    package_data={"pruning_tools": ["assets/*", "configs/*.yaml", "federated/flower_app/pyproject.toml"], "sparse_perception": ["py.typed", "runtime/condition_estimator.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    # `colcon test` runs pytest only for a package declaring it as a test dependency (colcon-core reads
    # extras_require["test"]; without it colcon falls back to unittest and runs 0 tests). Pinned as
    # requirements/lock.txt has it; package.xml declares python3-pytest for rosdep.
    extras_require={
        "test": ["pytest>=8,<9"],
        # NVIDIA GPU machines only; never installed by `make setup` or CI.
        "gpu": ["tensorrt>=10.0,<12", "pycuda>=2024.1"],
    },
    zip_safe=True,
    maintainer="sparse_perception developers",
    maintainer_email="dev@sparse-perception.invalid",
    description="Pruned, quantised YOLO detectors served on ROS 2 with run-time sparsity hot-swap.",
    license="AGPL-3.0-only",
    entry_points={
        "console_scripts": [
            "pruning-tools = pruning_tools.cli:main",
            "sparse-perception = sparse_perception.cli:main",
            "detector_node = sparse_perception.node.detector_node:main",
            "replay = sparse_perception.tools.replay:main",
            "recorder = sparse_perception.tools.recorder:main",
        ],
    },
)
