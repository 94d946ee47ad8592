# Thin wrappers around course.py, which needs nothing but Python 3.11.
PYTHON ?= python3

.PHONY: lab test setup

lab:
	$(PYTHON) course.py lab

test:
	$(PYTHON) course.py test

setup:
	$(PYTHON) course.py setup
