# Two commands matter: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ENV := PYTHONPATH=operator

.PHONY: demo test unit e2e lint binaries up down status clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed  ## local control plane, operator, alice granted edit for 30s and losing it
	$(ENV) $(BIN)/python -m daypass.controlplane.demo

test: lint binaries  ## lint, unit tests, end-to-end tests on the local control plane
	$(ENV) $(BIN)/python -m pytest -ra

# Built once per Kubernetes release and cached outside the tree; not needed with $$KUBECONFIG.
binaries: $(BIN)/.installed
	@if [ -z "$$KUBECONFIG" ]; then $(ENV) $(BIN)/python -m daypass.controlplane build; fi

unit: $(BIN)/.installed  ## the pure core only: no cluster, no sleeping
	$(ENV) $(BIN)/python -m pytest -ra tests/unit

e2e: binaries
	$(ENV) $(BIN)/python -m pytest -ra -m e2e

lint: $(BIN)/.installed
	$(BIN)/ruff check operator tests
	$(BIN)/mypy

up: $(BIN)/.installed  ## start the local control plane with Daypass's CRDs and admission policies
	$(ENV) $(BIN)/python -m daypass.controlplane up --apply crds --apply deploy/namespace.yaml \
		--apply deploy/rbac.yaml --apply deploy/user-rbac.yaml --apply deploy/admission

down:  ## stop the local control plane
	@if [ -x $(BIN)/python ]; then $(ENV) $(BIN)/python -m daypass.controlplane down; \
	else $(ENV) $(PYTHON) -m daypass.controlplane down; fi

status:
	$(ENV) $(BIN)/python -m daypass.controlplane status

clean: down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
