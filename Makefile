# sparse_perception — set-up, tests, demo. Run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
MSGS_SRC := $(shell find sparse_perception_msgs -type f \( -name '*.msg' -o -name '*.srv' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) 2>/dev/null)
# Offline and quiet: ultralytics must never download, install or phone home.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export YOLO_VERBOSE := false
export PYTHONDONTWRITEBYTECODE := 1
# The venv is an ament prefix (tools/ament_prefix.py): ROS 2 tools find this package through it.
AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH))
export AMENT_PREFIX_PATH

.PHONY: help setup ament-prefix test test-fast demo table bench lint clean distclean colcon-check

help:
	@echo "make setup   - create $(VENV) with pinned deps, build+install sparse_perception_msgs, make it an ament prefix (idempotent)"
	@echo "make demo    - end-to-end demo on embedded defaults (runs setup first when needed)"
	@echo "make table   - full-profile reproduction of the seed's Table 1 (hours on 2 cores)"
	@echo "make test    - the whole test suite (pytest)"
	@echo "make bench   - quick benchmarks, JSON into bench/results/"
	@echo "make clean   - remove build outputs (keeps $(VENV))"

setup: $(VENV)/.stamp-ament

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-deps: requirements/torch-cpu.txt requirements/lock.txt requirements/ultralytics.txt | $(PY)
	$(PIP) install -r requirements/torch-cpu.txt
	$(PIP) install -r requirements/lock.txt
	$(PIP) install --no-deps -r requirements/ultralytics.txt
	$(PIP) check || true
	touch $@

$(VENV)/.stamp-msgs: $(VENV)/.stamp-deps $(MSGS_SRC)
	rm -rf build/sparse_perception_msgs
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" CMAKE_PREFIX_PATH="$(CURDIR)/$(VENV)" \
	  cmake -S sparse_perception_msgs -B build/sparse_perception_msgs \
	    -DCMAKE_INSTALL_PREFIX="$(CURDIR)/$(VENV)" -DPython3_EXECUTABLE="$(CURDIR)/$(PY)" \
	    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > build/cmake-msgs.log 2>&1 || { tail -40 build/cmake-msgs.log; exit 1; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cmake --build build/sparse_perception_msgs -j2 >> build/cmake-msgs.log 2>&1 || { tail -40 build/cmake-msgs.log; exit 1; }
	cmake --install build/sparse_perception_msgs >> build/cmake-msgs.log 2>&1 || { tail -40 build/cmake-msgs.log; exit 1; }
	$(PY) -c "from sparse_perception_msgs.msg import Detection2DArray, DrivingCondition, EngineStatus; from sparse_perception_msgs.srv import SetSparsity"
	@echo "sparse_perception_msgs built and installed into $(VENV)"
	touch $@

$(VENV)/.stamp-project: $(VENV)/.stamp-msgs setup.py setup.cfg package.xml
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import sparse_perception, pruning_tools"
	touch $@

# The editable install writes no data_files and puts the console scripts in bin/ only: add the
# ament index entry, share/sparse_perception/{package.xml,launch,config}, lib/sparse_perception/<exe>
# and the AMENT_PREFIX_PATH activation hook (docs/setup.md).
AMENT_INPUTS := tools/ament_prefix.py setup.py setup.cfg package.xml resource/sparse_perception \
                $(wildcard launch/*.launch.py config/*.yaml)
$(VENV)/.stamp-ament: $(VENV)/.stamp-project $(AMENT_INPUTS)
	$(PY) tools/ament_prefix.py --prefix $(VENV)
	$(PY) -c "from ament_index_python.packages import get_package_share_directory as s; import os; \
	  assert os.path.isfile(os.path.join(s('sparse_perception'), 'launch', 'detector.launch.py'))"
	touch $@

ament-prefix: $(VENV)/.stamp-project
	$(PY) tools/ament_prefix.py --prefix $(VENV)
	touch $(VENV)/.stamp-ament

build/sparse_perception_msgs: ; @mkdir -p build
$(VENV)/.stamp-msgs: | build
build: ; @mkdir -p build

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The live stage also replays the real KITTI tracking drive per mode where ../shared holds it (KITTI_TRACKING= to skip).
KITTI_TRACKING ?= $(wildcard ../shared/data/kitti_tracking)

demo: setup
	$(PY) -m pruning_tools.demo.run $(if $(KITTI_TRACKING),--kitti-tracking $(KITTI_TRACKING)) $(DEMO_ARGS)

table: setup
	$(PY) -m pruning_tools.demo.run --profile full $(DEMO_ARGS)

bench: setup
	mkdir -p bench/results
	@# benches without a --quick mode (most need inputs: checkpoints, a zoo, a run) are listed, not run: docs/benchmarks.md has their commands
	for b in bench/[!_]*.py; do \
	  if grep -q -- '"--quick"' $$b; then $(PY) $$b --quick --json bench/results/$$(basename $$b .py).json || exit 1; \
	  else echo "make bench: skipping $$b (no --quick mode; its command is in docs/benchmarks.md)"; fi; \
	done

colcon-check: setup
	$(VENV)/bin/colcon list --base-paths . sparse_perception_msgs

clean:
	rm -rf build install log .pytest_cache

distclean: clean
	rm -rf $(VENV)
