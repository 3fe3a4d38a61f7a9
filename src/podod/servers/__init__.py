"""Connections to the mail servers: SSH sessions, tunnels, and local and remote commands."""
