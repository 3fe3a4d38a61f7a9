"""The mail database: schema, queries, passwords and the admin command handlers."""
