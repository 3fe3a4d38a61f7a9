"""Test harnesses (PostgreSQL, sshd, Dovecot, Postfix, SOGo, Synapse, Prometheus, a daemon
runner, ``make demo``) for tests, benchmarks and the demo, run from a checkout. Not part of
the shipped package: nothing under src/podod imports it (tests/unit/test_layout.py)."""
