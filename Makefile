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
# it also runs on CPU-only machines. pip's messages go to $(PIPLOG), printed in full only when a step fails (its
# ERROR lines always): setuptools prints a 10-line notice on every editable install of a package-dir layout such as
# ours, and a machine's pip configuration may add warnings of its own.
PIPLOG := $(VENV)/install.log
PIP    := $(PY) -m pip install -q
QUIET  = >>$(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@: > $(PIPLOG)
	@echo "$(PIP) -U pip" && $(PIP) -U pip $(QUIET)
	@echo "$(PIP) torch==2.14.1 torchvision==0.29.1" && $(PIP) torch==2.14.1 torchvision==0.29.1 $(QUIET)
	@echo "$(PIP) -e '.[test]'" && $(PIP) -e '.[test]' $(QUIET)
	@grep '^ERROR' $(PIPLOG) || true
	@echo "installed; pip's messages ($$(wc -l < $(PIPLOG)) lines) are in $(PIPLOG)"
	touch $(STAMP)
