"""The `safegen` command line (typer). One module a command; torch is imported lazily."""
