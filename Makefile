# The two quick-start commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv

.PHONY: demo test env

env:
	VENV=$(VENV) bash scripts/bootstrap.sh

demo: env
	$(VENV)/bin/radreport demo

test: env
	bash scripts/system_deps.sh
	QT_API=pyqt6 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)
