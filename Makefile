# The project's commands. README's quickstart: `make demo` and `make test`.
# Everything runs from the project's virtual environment (.venv, made by
# devenv/install-deps.sh with uv); the system interpreter is never installed into.
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(VENV)
PYTHON := $(VENV)/bin/python
DEVENV := $(PYTHON) -m its_devenv.cli
PYTEST_ARGS ?=
#: The fast loop: tests that need no cluster, no services, no GPU and are not slow.
CHECK_MARKERS := not cluster and not services and not slow and not gpu

.PHONY: help deps build-control-plane dev-cluster dev-cluster-down dev-cluster-reset \
        services services-down demo-down crds crds-check lint typecheck imports pytest test demo check \
        bench-serving bench-operator bench-data-plane bench-scale-out bench-cameras bench-accuracy bench-faults clean

help:
	@echo "make demo              the main job: cluster, services, operator, a pipeline, live runtime"
	@echo "make test              lint, type checks, import contracts, CRD drift check, all tests"
	@echo "make check             the fast loop: lint, types, contracts and the tests needing no cluster"
	@echo "make demo-down         stop everything the demo started"
	@echo "make dev-cluster       start (or reuse) the local control plane; prints KUBECONFIG"
	@echo "make dev-cluster-down  stop it"
	@echo "make services          start (or reuse) PostgreSQL and Redis; prints their URLs"
	@echo "make services-down     stop them"
	@echo "make crds              regenerate crds/ from the Python API types"

build-control-plane:
	bash devenv/its_devenv/build-control-plane.sh all

dev-cluster:
	@$(DEVENV) cluster up

dev-cluster-down:
	@$(DEVENV) cluster down

dev-cluster-reset:
	@$(DEVENV) cluster reset

services:
	@$(DEVENV) services up

services-down:
	@$(DEVENV) services down

crds:
	$(PYTHON) -m its_operator.api.crdgen

crds-check:
	$(PYTHON) -m its_operator.api.crdgen --check

lint:
	ruff check .
	ruff format --check .

typecheck:
	mypy -p its_operator -p its_runtime -p its_devenv
	mypy tests benchmarks

imports:
	lint-imports

pytest:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test: deps lint typecheck imports crds-check pytest

check: lint typecheck imports crds-check
	$(PYTHON) -m pytest -q -m "$(CHECK_MARKERS)" $(PYTEST_ARGS)

deps:
	ITS_VENV=$(VENV) bash devenv/install-deps.sh

demo: deps
	$(PYTHON) -m its_devenv.demo up

demo-down:
	$(PYTHON) -m its_devenv.demo down

bench-serving:
	@$(PYTHON) -c 'import ray.serve, matplotlib' 2>/dev/null || { \
	  echo "[bench-serving] installing the 'bench' extra (Ray Serve, matplotlib) into $(VENV)" >&2; \
	  $${ITS_CACHE_DIR:-$(HOME)/.cache/its-analytics}/uv-tool/bin/uv pip install -q --python $(PYTHON) -e '.[bench]' \
	  || echo '[bench-serving] could not install the bench extra: Ray Serve will be recorded as an error' >&2; }
	$(PYTHON) benchmarks/serving.py

bench-operator:
	$(PYTHON) benchmarks/operator_scale.py

bench-data-plane:
	$(PYTHON) benchmarks/data_plane.py

bench-scale-out:
	$(PYTHON) benchmarks/scale_out.py

bench-cameras:
	$(PYTHON) benchmarks/cameras.py

bench-accuracy:
	$(PYTHON) benchmarks/accuracy.py

bench-faults:
	$(PYTHON) benchmarks/faults.py

clean:
	-$(DEVENV) cluster down
	-$(DEVENV) services down
	rm -rf .devcluster .services .demo

# Any target that runs the project's Python needs the virtual environment first.
dev-cluster dev-cluster-down dev-cluster-reset services services-down crds crds-check \
lint typecheck imports pytest check demo-down bench-serving bench-operator bench-data-plane bench-scale-out \
bench-cameras: | $(PYTHON)
bench-accuracy bench-faults: | $(PYTHON)

$(PYTHON):
	ITS_VENV=$(VENV) bash devenv/install-deps.sh
