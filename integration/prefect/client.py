"""One Prefect API client for the flow runs nodegraph starts itself.

Prefect's flow engine enters ``SyncClientContext.get_or_create()`` for every flow run:
without a client context already current, it builds a new ``SyncPrefectClient``, and
with it a new httpx client whose SSL context loads the CA bundle (about 20 ms here,
even for a plain-HTTP API) and fetches a CSRF token. That is a fifth of a small graph
run. ``reused_client()`` makes one process-wide client context current around
nodegraph's own flow calls (``integration.run``, ``resume``, ``submit``, the CLI), so
``get_or_create`` finds it and every run shares one connection pool, as the task runs
of one flow already do.

The context is kept per API URL and key (a test or a user that points Prefect
elsewhere gets another one), stays entered for the life of the process, and is
closed at exit. Flows called by other code keep Prefect's own behaviour.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import SyncClientContext
from prefect.settings.context import get_current_settings

_contexts: dict[tuple[str | None, str | None], SyncClientContext] = {}
_lock = threading.Lock()


def _context_for(url: str | None, key: str | None) -> SyncClientContext:
    with _lock:
        found = _contexts.get((url, key))
        if found is None:
            found = SyncClientContext()
            # Its client is opened once and closed at exit, as entering the context
            # would (a closed Prefect client cannot be opened again); the context
            # becomes current only inside ``reused_client``.
            found.client.__enter__()
            found._context_stack = 1
            if get_current_settings().client.server_version_check_enabled:
                found.client.raise_for_api_version_mismatch_once()
            _contexts[url, key] = found
        return found


def api_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL``); without one, Prefect
    starts a temporary local server for the run."""
    return bool(get_current_settings().api.url)


@contextmanager
def reused_client() -> Iterator[None]:
    """Make this process's client context for the current API current, if there is
    no client context already (a caller's own is left alone)."""
    if SyncClientContext.get() is not None:
        yield
        return
    settings = get_current_settings()
    secret = settings.api.key.get_secret_value() if settings.api.key else None
    context = _context_for(settings.api.url, secret)
    token = SyncClientContext.__var__.set(context)
    try:
        yield
    finally:
        SyncClientContext.__var__.reset(token)


@atexit.register
def _close() -> None:
    with _lock:
        for context in _contexts.values():
            try:
                context.client.__exit__(None, None, None)
            except Exception:  # the process is ending; nothing to report to
                pass
        _contexts.clear()
