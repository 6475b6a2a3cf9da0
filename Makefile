# The two commands of the README: `make demo` and `make test`. Both work from a fresh clone:
# they create .venv with pip when it is missing and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test servers lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) install -e '.[edge,cloud,sim,demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PIP) install -e '.[dev,bench]'
	# pysparkplug, the independent Sparkplug B implementation of tests/test_sparkplug.py, pins paho-mqtt < 2 for an
	# API paho 2 still serves (version-1 callbacks): installed without its pins, on the paho and protobuf above.
	$(PIP) install --no-deps 'pysparkplug==0.6.1'
	touch $@

## Run the whole platform on embedded defaults (no server to install); Ctrl-C stops it.
demo: $(VENV)/.demo-installed
	$(VENV)/bin/twin demo

## Install what the tests need (Python packages and the real servers) and run the suite.
test: $(VENV)/.dev-installed servers
	$(PY) -m pytest -q -n 3 --dist loadfile $(PYTEST_ARGS)

## The real servers and peers the tests start on loopback: Mosquitto, InfluxDB, PostgreSQL, Node.js (for
## node-opcua, an independent OPC-UA implementation), Chromium (the dashboard's browser tests) and openssl
## (deploy/mosquitto/make-certs.sh, for the TLS broker tests), gcc and Python's headers (twin edge compile,
## for the ahead-of-time kernel tests), poppler-utils (pdftoppm and pdftotext read the shipment report's PDF),
## nats-server (the 3-node NATS JetStream cluster of the ingest scale-out test and `twin bench ingest --workers`),
## socat (a pseudo-terminal pair: the Modbus RTU line of tests/test_modbus.py).
servers:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing="$$missing influxdb"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v pdftoppm >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	python3 -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
	  2>/dev/null || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing test servers:$$missing"; \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "The tests need real servers. Install:$$missing (Debian: apt-get install -y mosquitto influxdb postgresql nodejs npm chromium docker-compose openssl gcc python3-dev poppler-utils nats-server socat)"; \
	    exit 1; \
	  fi; \
	fi

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .

## Every benchmark into docs/benchmarks.md; wrk (C) loads the API with far less client CPU than Python would.
bench: $(VENV)/.dev-installed servers
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk for the API benchmark"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }
	$(VENV)/bin/twin bench all

clean:
	rm -rf .demo .pytest_cache tests/artifacts
