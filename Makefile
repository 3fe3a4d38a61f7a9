# podod: make demo (run the daemon on an embedded default), make test (install + test).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# Debian packages the tests use (real components, never mocks).
APT_PACKAGES := postgresql postgresql-client openssh-server openssh-client \
	dovecot-core dovecot-imapd dovecot-lmtpd dovecot-pgsql dovecot-pop3d dovecot-submissiond \
	dovecot-sieve dovecot-managesieved \
	postfix postfix-pgsql systemd-journal-remote \
	sogo memcached prometheus prometheus-alertmanager pflogsumm systemd sudo \
	gcc libc6-dev python3-dev postfixadmin php-cli php-pgsql wrk openssl

# A real Matrix homeserver for the Matrix notifier's tests: Synapse from PyPI (Debian has
# none) in its own virtualenv under the ignored .cache/, installed once (~25 s, ~275 MB).
SYNAPSE_VENV ?= .cache/synapse
SYNAPSE_VERSION ?= 1.163.2

# The lock: exact versions of everything pip installs, made by 'make lock' (.ci/lock) from
# pyproject.toml's ranges. -c pins podod's dependencies, --build-constraint the build
# requirements pip fetches into its isolated build environment (setuptools, mypy for mypyc).
LOCK := constraints.txt
SYNAPSE_LOCK := constraints-synapse.txt
PIP_LOCKED = $(PIP) install -q -c $(LOCK) --build-constraint $(LOCK)

.PHONY: help venv compiled apt deps synapse demo test lint unit integration bench lock clean

help:
	@echo "make demo   run podod on a throwaway PostgreSQL cluster (Ctrl-C stops everything)"
	@echo "make test   install what the tests need and run lint + the whole suite"
	@echo "make lint   ruff and mypy"
	@echo "make compiled  compile the log parser with mypyc (make test and make bench do)"
	@echo "make bench  run the benchmarks (figures printed, JSON in .bench/)"
	@echo "make lock   resolve pyproject.toml's ranges afresh into $(LOCK) (then make test)"

# A fresh Debian has python3 but not its venv module: install python3-venv when root.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing python3-venv"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && \
			$(PYTHON) -m venv $(VENV); \
		else echo "'$(PYTHON) -m venv' failed: install python3-venv (as root: apt-get" \
			"install python3-venv)"; exit 1; fi; }
	$(PIP) install -q -c $(LOCK) --upgrade pip setuptools wheel
	PODOD_PURE_PYTHON=1 $(PIP_LOCKED) -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The log parser's modules compiled with mypyc, in place (setup.py, src/podod/compiled.py):
# compiled again whenever one is missing or older than its source or setup.py (the install
# above leaves them to this step, so they are compiled once). A failure is an error here,
# not setup.py's fallback to the Python source: tests and benchmarks never run a stale or
# uncompiled parser unnoticed.
compiled: venv
	@$(PY) -c 'import sys, podod.compiled as c; why = c.needs_compiling(); \
		sys.exit(why and f"compiling the log parser: {why}")' || { \
		$(MAKE) --no-print-directory apt APT_PACKAGES="gcc libc6-dev python3-dev" && \
		PODOD_REQUIRE_COMPILED=1 $(PIP_LOCKED) --no-deps -e .; }

$(SYNAPSE_VENV)/.installed: $(SYNAPSE_LOCK)
	test -x $(SYNAPSE_VENV)/bin/python || $(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install -q -c $(SYNAPSE_LOCK) --upgrade pip setuptools wheel
	$(SYNAPSE_VENV)/bin/pip install -q -c $(SYNAPSE_LOCK) --build-constraint $(SYNAPSE_LOCK) \
		'matrix-synapse==$(SYNAPSE_VERSION)'
	touch $@

synapse: $(SYNAPSE_VENV)/.installed

# Debian packages: installed when missing and we are root; otherwise say what is missing.
# (Synapse, which Debian lacks, comes from PyPI into its own virtualenv.)
deps: synapse apt

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:" $$missing; \
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
			echo "postfixadmin postfixadmin/dbconfig-install boolean false" | debconf-set-selections; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing \
			|| { echo "apt-get failed"; exit 1; }; \
		else echo "missing Debian packages (run as root, or install them):" $$missing; exit 1; fi; \
	fi

demo: venv
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		$(MAKE) apt APT_PACKAGES="postgresql"; fi
	$(PY) -m testbed.demo

lint: venv
	$(VENV)/bin/ruff check setup.py src testbed tests bench plugins
	$(VENV)/bin/mypy

unit: venv compiled
	$(VENV)/bin/pytest -q tests/unit

# Test files run side by side in TEST_WORKERS processes (pytest-xdist; a file's tests stay
# together, so a module's started components are shared): most of the suite waits on real
# services, so two workers on two cores keep CI well inside its budget.
TEST_WORKERS ?= 2
test: venv deps compiled lint
	PODOD_STRICT_SKIPS=1 $(VENV)/bin/pytest -q -ra --durations=15 -n $(TEST_WORKERS) \
		--dist loadfile tests

bench: venv deps compiled
	@mkdir -p .bench
	@for b in bench/*.py; do case $$b in */loggen.py|*/_*) continue;; esac; \
		echo "== $$b"; $(PY) $$b || exit 1; done

# Upgrading is deliberate: resolve afresh, then 'make test' must pass before both are committed.
lock:
	PYTHON=$(PYTHON) SYNAPSE_VERSION=$(SYNAPSE_VERSION) .ci/lock

clean:
	rm -rf .demo .bench .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete
