# The two commands a new machine needs: `make demo` and `make test`.
# Both create .venv, install Lightbox into it, and build (once, cached under
# ~/.cache/lightbox) the kube-apiserver, kube-controller-manager, etcd and helm
# binaries from the Go module proxy, unless KUBEBUILDER_ASSETS points at them.

# The card's folder operator/ would shadow the standard library's `operator`
# module for `python -m ...` run from this folder; safe-path mode keeps the
# current directory off sys.path for every Python started below.
export PYTHONSAFEPATH := 1

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration realnode node-down crds bench down clean mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## demo: run a validation end to end and print the results: on a real node where the machine allows it
## (root, Linux; the operator in-cluster from the chart, left running), else on the local control plane
demo: $(STAMP)
	$(BIN)/lightbox demo --node auto

## down: stop the demo's control plane
down: $(STAMP)
	$(BIN)/lightbox control-plane down

# REALNODE=1 (default): `make test` runs the real-node tier after the integration tier; it skips
# with one line naming what is missing where the machine cannot (not root, not Linux), and with
# CI=true it fails instead. On since it passed twice in a row from a fresh clone (README, "The real
# node"); REALNODE=0 leaves it out.
REALNODE ?= 1

## test: the linters, then unit tests, then integration tests against a real kube-apiserver (REALNODE=1: then the real node)
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m lightbox.devtools.binaries --helm
	$(BIN)/lightbox crds --check
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	$(if $(filter 1,$(REALNODE)),$(MAKE) --no-print-directory realnode,@echo "real-node tier not run (REALNODE=$(REALNODE)): make realnode, or make test REALNODE=1")

## lint: ruff (style, likely bugs, complexity over 20) and mypy (strict on lightbox/api and operator/)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m lightbox.devtools.typecheck

# The unit tier in UNIT_WORKERS processes (pytest-xdist; 2 = CI's cores). A file's tests stay together in one
# worker (--dist loadfile): some share a fixed pod uid, and the development runner's sweep kills that uid's processes.
# The integration tier stays in one process: one control plane per session.
UNIT_WORKERS ?= 2

unit: $(STAMP)
	$(BIN)/pytest -n $(UNIT_WORKERS) --dist loadfile tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

## realnode: the real-node tier (root): control plane + containerd/kubelet node + the chart in-cluster.
## Builds what it needs on first use (cached); elsewhere skips with one line naming what is missing (CI=true: fails)
# Two processes (pytest-xdist): the tests on the node in one, the image checks in the other (tests/realnode/conftest.py)
realnode: $(STAMP)
	LIGHTBOX_REALNODE=1 $(BIN)/pytest -rs -n 2 tests/realnode

## node-down: stop a node left by `lightbox node up` or the demo, and restore the host
node-down: $(STAMP)
	$(BIN)/lightbox node down

crds: $(STAMP)
	$(BIN)/lightbox crds

bench: $(STAMP)
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/operator.py

## mutation: mutation testing of the trust-critical modules (a benchmark, not part of test; docs/mutation.md)
mutation: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,mutation]'
	$(BIN)/python -m lightbox.devtools.mutation $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .lightbox
