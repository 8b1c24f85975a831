# cnncodes: `make demo` sets everything up and runs every stage; `make test` runs the tests.
# Overrides: DATA=, BACKBONE=, WEIGHTS=, HEAD=, EPOCHS=, MODE=, DEVICE=, SEED=, RUNS=, FORCE=1, VIEWS=, TTA=, TUNE=1,
# EXCLUDE= (classify without the images an audit's exclude.txt lists: runs named -excluded), REPORT_OUT=,
# TORCH_INDEX= (make venv: pip's index for torch, e.g. https://download.pytorch.org/whl/cpu for the CPU-only build)
PYTHON ?= python3
PY := .venv/bin/python
DATA ?= data/hymenoptera_data
BACKBONE ?= resnet18
WEIGHTS ?= DEFAULT
HEAD ?= all
EPOCHS ?= 25
MODE ?= full
DEVICE ?= auto
SEED ?= 0
VIEWS ?= 0
TTA ?= 1
DATASET := $(notdir $(abspath $(DATA)))
# the package names its own default cache file (pipeline/codes/weights.py); expanded when a recipe runs.
# `make features` writes the one named by BACKBONE and WEIGHTS; the stages that read codes (classify, audit) use,
# when BACKBONE and WEIGHTS are left at their defaults, the dataset's only features file whatever it was made with
# (several: make stops and lists them)
features_path = $(shell $(PYTHON) -m pipeline.codes.weights features-path $(1) '$(DATA)' '$(BACKBONE)' '$(WEIGHTS)')
NAMED := $(filter-out default file undefined,$(origin BACKBONE) $(origin WEIGHTS))
FEATURES ?= $(or $(call features_path,$(if $(NAMED),,--find)),$(error no single features file for $(DATA): see above))
FEATURES_OUT = $(if $(filter-out file,$(origin FEATURES)),$(FEATURES),$(call features_path,))
RUNS ?= reports/runs/$(DATASET)
COMMON := --device $(DEVICE) --seed $(SEED)
BENCH_ARGS ?= --quick
BENCH_OUT ?= reports/benchmarks.json
REPORT_OUT ?= reports/$(DATASET)

.PHONY: venv data features classify finetune report audit export sweep demo lint test bench bench-gpu clean

venv: .venv/.installed
.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test,export]'
	touch $@

data: venv
	$(PY) -m pipeline data --data $(DATA)

features: data
	$(PY) -m pipeline features --data $(DATA) --backbone $(BACKBONE) --weights $(WEIGHTS) --out $(FEATURES_OUT) $(COMMON) $(if $(FORCE),--force) $(if $(filter-out 0,$(VIEWS)),--views $(VIEWS)) $(if $(filter-out 1,$(TTA)),--tta $(TTA))

classify: venv
	$(PY) -m pipeline classify --features $(FEATURES) --head $(HEAD) --data $(DATA) --out $(RUNS) --seed $(SEED) $(if $(FORCE),--force) $(if $(EXCLUDE),--exclude $(EXCLUDE))

finetune: data
	$(PY) -m pipeline finetune --data $(DATA) --backbone $(BACKBONE) --weights $(WEIGHTS) --mode $(MODE) --epochs $(EPOCHS) --out $(RUNS) $(COMMON) $(if $(FORCE),--force) $(if $(TUNE),--tune-lr)

report: venv
	$(PY) -m pipeline report --runs $(RUNS) --out $(REPORT_OUT) $(if $(wildcard $(AUDIT_OUT)/label_issues.csv),--audit $(AUDIT_OUT))

AUDIT_OUT ?= reports/audit/$(DATASET)
audit: venv   # label issues, near-duplicates and leaks, outliers: CSVs and exclude.txt in $(AUDIT_OUT)
	$(PY) -m pipeline audit --features $(FEATURES) --out $(AUDIT_OUT) --seed $(SEED)

export: venv   # MODEL=reports/runs/<dataset>/<run> [OUT=shipped/<run>]: model.onnx + standalone predict.py
	$(PY) -m pipeline export --model $(MODEL) --out $(or $(OUT),shipped/$(notdir $(MODEL)))

# BACKBONES="mobilenet_v2=FILE timm/tf_efficientnet_lite0=DEFAULT resnet18=none" [SCREEN=N] [AUDIT=0]: codes, heads,
# each backbone's audit (AUDIT=0 skips it), one report
BACKBONES ?= resnet18=DEFAULT mobilenet_v2=DEFAULT timm/tf_efficientnet_lite0=DEFAULT
sweep: data
	$(PY) -m pipeline sweep --data $(DATA) --backbones '$(BACKBONES)' $(COMMON) $(if $(FORCE),--force) $(if $(SCREEN),--screen $(SCREEN)) $(if $(filter 0,$(AUDIT)),--no-audit) $(if $(SWEEP_RUNS),--out $(SWEEP_RUNS)) $(if $(SWEEP_REPORT),--report $(SWEEP_REPORT))

# fine-tuning with the recipe's lr, and TUNE=1 adds it with its lr tuned like the heads' settings (the slowest part:
# 11 of 19 minutes at EPOCHS=2 on a 2-core CPU). The report goes to reports/<dataset>/ (REPORT_OUT), never over the
# committed example report in reports/
demo: features classify
	$(MAKE) finetune MODE=full TUNE=
	$(if $(TUNE),$(MAKE) finetune MODE=full TUNE=1)
	$(MAKE) finetune MODE=frozen TUNE=
	$(MAKE) report

lint: venv
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

bench: venv   # quick mode; BENCH_ARGS= (empty) for the full 25-epoch comparison
	$(PY) -m bench $(BENCH_ARGS) --data $(DATA) --backbone $(BACKBONE) --weights $(WEIGHTS) --device $(DEVICE) --out $(BENCH_OUT)

bench-gpu: venv   # the GPU targets: extraction on 10,000 synthetic JPEGs, 25 epochs of fine-tuning
	$(PY) -m bench --sections extraction,finetune --data $(DATA) --backbone $(BACKBONE) --weights $(WEIGHTS) \
		--device cuda --out reports/benchmarks-gpu.json

clean:
	rm -rf features/*/ reports/runs .venv
