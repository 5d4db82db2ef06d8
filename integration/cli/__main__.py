"""``python -m integration.cli``: the ``nodegraph`` command."""

from integration.cli.app import main

main()
