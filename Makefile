# make demo: install, train on the built-in shapes, export + verify, write a sample grid.
# make test: install, run the test suite.
# The environment lives in .venv; torch is the CPU build, installed before anything can pull CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Where the CPU torch wheel comes from. Empty: pip's configured index. Elsewhere, for example:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[train,test]'
	touch $@

demo: install
	$(PY) -m train --data shapes --latent-dim 8 --epochs 30 --out runs/shapes
	$(PY) -m export runs/shapes --out exports/shapes --force
	$(PY) -m runtime sample exports/shapes --n 64 --seed 0 --scale 4 --out samples.png

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs exports samples.png

# make desktop EXPORT=exports/shapes: the Tk example app (examples/desktop/app.py) on an export directory.
EXPORT ?= exports/shapes
.PHONY: desktop
desktop: install
	$(PY) examples/desktop/app.py $(EXPORT)
