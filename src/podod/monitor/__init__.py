"""Monitoring: collectors, the mail-log parser, the metrics store."""
