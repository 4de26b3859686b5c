# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv/ on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pyvidgen-installed
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' 2>/dev/null)
EXT_STAMP := pyvidgen/.ext-built
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench build sanitize venv clean

venv: $(STAMP)

# torch is pinned to the CPU build that matches the project's machines; triton runs its kernels
# in the interpreter there. The package is installed editable, so Python edits need no reinstall.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.13.0 triton==3.9.0 ninja
	PYVIDGEN_NO_EXTENSION=1 $(PIP) install --no-build-isolation -e '.[test,bench,triton]'
	touch $(STAMP)

# The C++ extension is built in place by ninja, separately from pip, so a rebuild after an edit
# of csrc/ recompiles only what changed.
$(EXT_STAMP): $(STAMP) $(CSRC) setup.py
	PYVIDGEN_REQUIRE_EXTENSION=1 $(PY) setup.py -q build_ext --inplace
	$(PY) -c "import pyvidgen._C"
	touch $(EXT_STAMP)

build: $(EXT_STAMP)

test: build
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q -m slow

# The C++ kernels built with AddressSanitizer + UndefinedBehaviorSanitizer (a separate build, loaded through
# PYVIDGEN_EXTENSION), then the op tests on the cpp backend: an out-of-bounds access or undefined behaviour
# aborts the run. Python and torch are not instrumented, so the ASan runtime is preloaded and leak
# detection (which would report the interpreter's own allocations) is off.
SAN_DIR := build/sanitize
sanitize: venv
	PYVIDGEN_SANITIZE=1 PYVIDGEN_REQUIRE_EXTENSION=1 $(PY) setup.py -q build_ext \
		--build-lib $(SAN_DIR)/lib --build-temp $(SAN_DIR)/tmp
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYVIDGEN_EXTENSION="$$(ls $(SAN_DIR)/lib/pyvidgen/_C*.so)" \
		$(PY) -m pytest -q -p no:cacheprovider -m "not slow" -k "not triton" tests/ops tests/nn tests/models tests/test_backend.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: build
	$(VENV)/bin/pyvidgen demo

bench: build
	$(VENV)/bin/pyvidgen bench

clean:
	rm -rf build $(EXT_STAMP) pyvidgen/_C*.so
