# make demo: install, train on the built-in shapes, export + verify, write a sample grid.
# make test: install, run the test suite. make check: lint (ruff).
# make desktop / make web EXPORT=DIR: the Tk app, the browser page (below).
# The environment lives in .venv; torch is the CPU build, installed before anything can pull CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The one torch pin: the lower bound of the train extra in pyproject.toml (the tested CPU build).
TORCH_VERSION ?= $(shell sed -n 's/^ *"torch>=\([0-9.]*\),.*/\1/p' pyproject.toml)
# Where the CPU torch wheel comes from. Empty: pip's configured index. Elsewhere, for example:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test check install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[train,test,diffusers,pythae]'  # the importers' extras too: make test covers them
	touch $@

demo: install
	$(PY) -m edgevae train --data shapes --latent-dim 8 --epochs 30 --out runs/shapes
	$(PY) -m edgevae export runs/shapes --out exports/shapes --force
	$(PY) -m edgevae sample exports/shapes --n 64 --seed 0 --scale 4 --out samples.png

test: install
	$(VENV)/bin/pytest  # not python -m pytest: that would put the checkout itself on sys.path

# Lint: ruff, configured in pyproject.toml; CI runs it beside the tests.
check: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs exports samples.png

# make desktop EXPORT=exports/shapes: the Tk example app (examples/desktop/app.py) on an export directory.
EXPORT ?= exports/shapes
.PHONY: desktop
desktop: install
	$(PY) examples/desktop/app.py $(EXPORT)

# make web EXPORT=exports/shapes: the browser example (examples/web) on an export, served on 127.0.0.1 (WEB_PORT).
# onnxruntime-web comes from examples/web/package-lock.json; the server is examples/web/serve.py (standard library).
WEB_PORT ?= 8000
.PHONY: web
web: examples/web/node_modules/.package-lock.json
	$(PYTHON) examples/web/serve.py $(EXPORT) --port $(WEB_PORT)

examples/web/node_modules/.package-lock.json: examples/web/package-lock.json
	cd examples/web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
