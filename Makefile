# Two commands a newcomer needs: `make run` and `make test`. Both install into .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run demo test install bench clean

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start intake (127.0.0.1:8000) and Dagster (127.0.0.1:3000) on the embedded default. Ctrl-C stops both.
run: $(STAMP)
	$(BIN)/xmas run

## Same, with campaign days shrunk to one minute: watch a whole 7-email sequence play out in ~10 minutes.
## .xmas-demo/demo.env records its settings and process id, so `xmas` commands run meanwhile use the demo's state.
## Other ports: make demo RUN_ARGS='--port 8100 --dagster-port 3100'
demo: $(STAMP)
	@mkdir -p .xmas-demo
	@home="$${XMAS_HOME:-$(CURDIR)/.xmas-demo}"; \
	printf 'XMAS_HOME=%s\nXMAS_DAY_SECONDS=60\nXMAS_DEMO_PID=%s\n' "$$home" "$$$$" > .xmas-demo/demo.env; \
	echo "XMAS_HOME=$$home XMAS_DAY_SECONDS=60 XMAS_DELIVERY_CRON='* * * * *' $(BIN)/xmas run $(RUN_ARGS)"; \
	XMAS_HOME="$$home" XMAS_DAY_SECONDS=60 XMAS_DELIVERY_CRON='* * * * *' exec $(BIN)/xmas run $(RUN_ARGS)

## Every test (SQLite; also Postgres when XMAS_TEST_DATABASE_URL is set).
test: $(STAMP)
	$(BIN)/python -m pytest xmas_pipeline_tests

bench: $(STAMP)
	$(BIN)/python bench/due.py
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/notion.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) .xmas .xmas-demo *.egg-info
