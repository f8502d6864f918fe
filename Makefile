# make demo : set up .venv if missing or stale, then run the main job on the digits data.
# make test : set up .venv if missing or stale, then run the test suite.
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf work_dirs .pytest_cache .hypothesis
