# The two quick-start commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv

.PHONY: demo test env demo-model demo-model-eval

env:
	VENV=$(VENV) bash scripts/bootstrap.sh

demo: env
	$(VENV)/bin/radreport demo

test: env
	bash scripts/system_deps.sh
	QT_API=pyqt6 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Rebuild the shipped demo model from nothing (CPU, about 40 minutes) and score it on held-out phantoms.
demo-model: env
	bash scripts/train_demo_model.sh

# The demo model card's held-out figures, from the shipped weights: the test phantoms are regenerated (seeded).
demo-model-eval: env
	$(VENV)/bin/radreport phantoms build/demo-model/test-phantoms --count 2400 --seed 0 --only test --quiet
	$(VENV)/bin/radreport eval --preset phantom --manifest build/demo-model/test-phantoms/manifest.jsonl --split test
