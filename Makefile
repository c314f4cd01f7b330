# Every target sets itself up: `make test` and `make demo` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test lint format demo bench soak soak-memory clean deploy-check

install: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure-system-deps.sh
	bash scripts/ensure-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m validator_node.cli devnet --validators 4 --epochs 3

# bench.bench_sim_scale: V = 16/32/64 by simulation with WAN latencies (about 2 min on 2 cores)
bench: $(STAMP)
	$(PY) -m bench
	$(PY) -m bench.bench_sim_scale

# the simulator's soak: a fixed set (V = 4-31) and sets changing at epoch boundaries (V = 4-64, LAN
# and WAN latencies), all faults; SOAK_SIM_ARGS="--soak-scale 0.3" for a shorter run
soak: $(STAMP)
	$(PY) -m consensus.sim --soak --json $(SOAK_SIM_ARGS)

# an hour of a 4-validator devnet with miners, each node's RSS printed every minute; fails if any
# node's memory still grows after warm-up (bench/soak_memory.py). Not part of `make test`.
SOAK_MINUTES ?= 60
soak-memory: $(STAMP)
	$(PY) -m bench.soak_memory --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

# runs deploy/ecosystem.config.js under pm2 from npm (pinned; cached in ~/.cache/platform-validator)
# against a one-validator devnet, and systemd-analyze verify on deploy/validator-node.service
# (scripts/deploy-check.sh; docs/operator.md sections 11-12). Not part of `make test`.
deploy-check: $(STAMP)
	VENV=$(VENV) bash scripts/deploy-check.sh
