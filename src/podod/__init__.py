"""podod: one daemon for mail administrators."""

__version__ = "0.1.0"
