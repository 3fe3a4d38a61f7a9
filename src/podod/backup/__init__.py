"""Backups taken before every real change: catalog, row and pg_dump backups, verify, restore."""
