# The two quick-start commands: `make demo` and `make test` (ruff, then pytest). Both set up .venv first.
VENV ?= .venv

.PHONY: demo test env demo-model

env:
	VENV=$(VENV) bash scripts/bootstrap.sh

demo: env
	$(VENV)/bin/radreport demo

test: env
	bash scripts/system_deps.sh
	$(VENV)/bin/ruff check napari_radreport tests scripts
	QT_API=pyqt6 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Train the demo model from nothing on the CPU and score it on held-out phantoms (scripts/train_demo_model.sh).
demo-model: env
	bash scripts/train_demo_model.sh
