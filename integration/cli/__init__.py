"""The ``nodegraph`` command line (typer + rich)."""
