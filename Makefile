# Tongban — the two commands a newcomer needs:
#   make demo   create .venv, install Tongban, run the end-to-end demo
#   make test   install the test dependencies and run the whole suite (SQLite, and PostgreSQL
#               when TONGBAN_TEST_POSTGRES_URL is set or a local server answers on 127.0.0.1:5432)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck proto proto-check divisions divisions-check ci clean bench browser-deps screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(BIN)/tongban demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: $(VENV)/.installed-dev
	$(BIN)/python proto/gen.py

proto-check: $(VENV)/.installed-dev
	$(BIN)/python proto/gen.py --check

divisions: $(VENV)/.installed-run
	$(BIN)/tongban divisions build --source ../shared/data

divisions-check: $(VENV)/.installed-run
	$(BIN)/tongban divisions build --source ../shared/data --check

# Benchmarks write bench/results/<name>.json (see bench/README.md); BENCH_ARGS=--quick for a short run,
# EXCHANGE_ARGS=--million to add the memory of a 1,000,000-record roster; MATCHING_ARGS for bench.matching
# (e.g. --sizes 10000 --feedback /tmp/matching_feedback.md). The README's performance
# table is then regenerated from the results (`python -m bench.readme_table --check` finds drift).
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.store $(BENCH_ARGS)
	$(BIN)/python -m bench.directory $(BENCH_ARGS)
	$(BIN)/python -m bench.exchange $(BENCH_ARGS) $(EXCHANGE_ARGS)
	$(BIN)/python -m bench.matching $(BENCH_ARGS) $(MATCHING_ARGS)
	$(BIN)/python -m bench.readme_table

# Headless Chromium, its driver and CJK fonts for the web inbox's browser tests (Debian packages;
# .ci/run calls this). Without them tests/test_web_browser.py skips, unless TONGBAN_REQUIRE_BROWSER=1.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q .; then \
	  echo "chromium, chromedriver and CJK fonts present"; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver fonts-noto-cjk \
	    || (apt-get update -q && apt-get install -y -q chromium chromium-driver fonts-noto-cjk); \
	fi

# Refresh docs/img/inbox.png and docs/img/case.png: the browser test saves them as it goes.
screenshots: $(VENV)/.installed-test browser-deps
	TONGBAN_REQUIRE_BROWSER=1 TONGBAN_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_web_browser.py

ci:
	.ci/run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
