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

# Benchmarks, one command: `tongban bench` runs bench.store, bench.directory, bench.exchange and
# bench.matching one after the other, writes bench/results/<name>.json (see bench/README.md), then
# regenerates the README's performance table (`python -m bench.readme_table --check` finds drift) and
# prints the time each took. BENCH_ARGS are options of `tongban bench` (--quick for a short run,
# --only NAME ...); EXCHANGE_ARGS go to bench.exchange (--million: the memory of a 1,000,000-record
# roster), MATCHING_ARGS to bench.matching (e.g. --sizes 10000 --feedback /tmp/matching_feedback.md).
bench: $(VENV)/.installed-run
	$(BIN)/tongban bench $(BENCH_ARGS) --exchange-args='$(EXCHANGE_ARGS)' --matching-args='$(MATCHING_ARGS)'

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
