# Two entry points, both idempotent: the venv is built once and reused.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The default suite and the tests are offline by design.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

.PHONY: quickstart test lint
quickstart: $(STAMP)
	$(OFFLINE) $(VENV)/bin/transferbench run benchmarks/quickstart.yaml

test: lint
	$(OFFLINE) $(PY) -m pytest -q

# The import-linter contracts of pyproject.toml (layers runners -> tasks -> core; no cycles). import-linter reads
# the installed layout, where tasks/ and runners/ are transferbench/tasks and transferbench/runners, so it checks a
# throwaway copy of the sources in that layout (run from there, so that copy is what `import transferbench` finds).
LAYOUT := build/import-layout
lint: $(STAMP)
	rm -rf $(LAYOUT) && mkdir -p $(LAYOUT)
	cp -r transferbench $(LAYOUT)/transferbench && cp -r tasks $(LAYOUT)/transferbench/tasks && cp -r runners $(LAYOUT)/transferbench/runners
	cd $(LAYOUT) && $(CURDIR)/$(VENV)/bin/lint-imports --no-cache --no-logo $(CURDIR)/pyproject.toml

# torch/torchvision are pinned to the CUDA build pair that pip resolves (from local disk here);
# it also runs on CPU-only machines.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)
