"""How every ``nodegraph`` command reports a failure: one line on stderr, never a
traceback (unless ``NODEGRAPH_DEBUG=1`` asks for it), and the documented exit code.

    $ nodegraph cache stats -c broken.yaml
    error: cannot read config broken.yaml: ...

Errors nodegraph raises on purpose (``NodegraphError``) print their message; anything
else is a bug or a broken environment, and prints its type and message with a hint.
"""

from __future__ import annotations

import json
import os
import traceback
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from integration.errors import NodegraphError

DEBUG_ENV = "NODEGRAPH_DEBUG"
"""Set to 1 to get the traceback of an unexpected error on stderr."""
FAILED = 1
"""The exit code of a command that failed (the README's CLI section lists them all)."""

err = Console(stderr=True)


def debugging() -> bool:
    """Whether ``NODEGRAPH_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def print_error(message: str, console: Console | None = None) -> None:
    """``error: MESSAGE`` on stderr; brackets in the message are text, not rich markup."""
    (console or err).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def unexpected(exc: BaseException) -> str:
    """The one-line message for an error nodegraph did not expect; with
    ``NODEGRAPH_DEBUG=1`` the traceback goes to stderr first."""
    if debugging():
        traceback.print_exception(exc)
    detail = " ".join(str(exc).split())
    if len(detail) > 500:
        detail = detail[:497] + "..."
    return (
        f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} "
        f"(set {DEBUG_ENV}=1 for the traceback, and please report it)"
    )


class NodegraphGroup(TyperGroup):
    """The top-level command group: a failure no command caught still ends as one line
    (and, with ``--json``, one JSON object) and exit code 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        # Dispatching clears these; keep them to tell whether --json was given.
        argv = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException):  # exits, usage errors: typer reports them
            raise
        except NodegraphError as exc:
            message = str(exc)
        except Exception as exc:
            message = unexpected(exc)
        if "--json" in argv:
            print(json.dumps({"state": "error", "error": message}))
        print_error(message)
        raise typer.Exit(FAILED)
