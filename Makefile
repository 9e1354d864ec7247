# mtl_course: two commands, each sets itself up from nothing.
#   make book   -> executes every chapter and builds the HTML book into _build/html
#   make test   -> the whole test suite (unit, strict nbval, exercises, offline book build)

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
NOTEBOOKS := $(wildcard book/*.ipynb) $(wildcard solutions/*.ipynb)

# Quiet, reproducible runs: no progress bars in stored outputs, CPU-sized profile.
export TQDM_DISABLE ?= 1
export MTL_COURSE_PROFILE ?= quick
export PYDEVD_DISABLE_FILE_VALIDATION = 1
export JUPYTER_PLATFORM_DIRS = 1
export OMP_NUM_THREADS ?= 2
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning
# threads made small training steps about 20 times slower (same results either way).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test test-unit test-notebooks test-notebooks-native test-notebooks-emulated test-book book execute exercises benchmarks clean test-robust models evaluate-models test-min-versions

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup test-unit test-notebooks test-book

test-unit: setup
	$(PY) -m pytest tests

NBVAL := -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg book solutions

# Strict nbval on this machine. `make test-notebooks-emulated` runs it again on an
# emulated other machine, so that an output or claim that holds only on this
# processor's rounding fails here as it would on a reader's laptop: ATen's kernels
# one vector ISA below this CPU's (AVX-512 -> AVX2, as on most laptops; AVX2 ->
# none) and MKL in compatible mode; both change the results of the same training
# run, at about 1.2x the time. Both are part of `make test`: every notebook must pass
# on this processor's rounding and on the emulated one.
EMULATED = $(shell $(PY) -c "import torch; c = torch.backends.cpu.get_cpu_capability(); \
	print('ATEN_CPU_CAPABILITY=' + ('avx2' if c.startswith('AVX512') else 'default'))") MKL_CBWR=COMPATIBLE

test-notebooks: test-notebooks-native test-notebooks-emulated

test-notebooks-native: setup
	$(PY) $(NBVAL)

test-notebooks-emulated: setup
	env $(EMULATED) $(PY) $(NBVAL)

# The test build uses the outputs stored in the notebooks (strict nbval has
# just proved them current); `make book` executes every chapter afresh.
test-book: setup
	@mkdir -p _build
	$(PY) -c "import yaml; c = yaml.safe_load(open('_config.yml')); c['execute']['execute_notebooks'] = 'off'; yaml.safe_dump(c, open('_build/_config_stored_outputs.yml', 'w'))"
	$(VENV)/bin/jupyter-book build . --config _build/_config_stored_outputs.yml --warningiserror --keep-going --all

book: setup
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --all
	@echo "The book is in _build/html/index.html"

# Robustness runs (not part of `make test`): every chapter and solution, or NB=...,
# under other seed offsets and emulated machines (RUNS="1 2 3 4"; see
# `python -m mtl_course.robustness --help`). Prints each assert's pass count and
# the spread of the numbers it compares; results in _build/robustness/.
RUNS ?= 1 2 3
test-robust: setup
	$(PY) -m mtl_course.robustness $(or $(NB),$(NOTEBOOKS)) --runs $(RUNS)

# The package's unit tests with the lowest declared versions (requirements-min.txt),
# in a fresh venv of its own. Not part of `make test`.
MIN_VENV ?= .venv-min
test-min-versions:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check setuptools -r requirements-min.txt
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(MIN_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(torch|numpy|scipy|scikit-learn|matplotlib|pillow|threadpoolctl|tqdm|nbformat|nbclient|ipykernel|jupyter.client)=='
	$(MIN_VENV)/bin/python -m pytest tests --ignore=tests/test_exercises.py

# The trained-model store (mtl_course/trained): train every recipe, or MODEL=name,
# and write the weights and manifest.json. Commit the result. Resumable: run it
# again after an interruption and it continues from its checkpoint. The studies
# made of several runs train in two processes (JOBS=1: in one).
models: setup
	$(PY) -m mtl_course.train $(or $(MODEL),all) --profile quick --jobs $(or $(JOBS),2)

# Test stored models again (MODEL="name ..."), weights unchanged, after a change of the
# test protocol; updates their metrics in manifest.json.
evaluate-models: setup
	$(PY) -m mtl_course.store evaluate $(MODEL)

# Re-execute notebooks in place (after changing them or the code they call),
# then regenerate the exercises from the solutions.
execute: setup
	$(PY) -m mtl_course.grading execute $(or $(NB),$(NOTEBOOKS))
	$(PY) -m mtl_course.grading generate

exercises: setup
	$(PY) -m mtl_course.grading generate

# Speed and accuracy benchmarks: never part of `make test`. Each script prints
# medians and ratios measured side by side in one run, and the machine.
benchmarks: setup
	test ! -f benchmarks/requirements.txt || $(PY) -m pip install --quiet -r benchmarks/requirements.txt
	for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf _build
