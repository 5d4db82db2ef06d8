"""Flow-run heartbeats that end the moment the run does.

Prefect's sync flow engine sends ``prefect.flow-run.heartbeat`` events from a thread
that sleeps in one-second steps and is joined when the flow returns: every flow run
pays up to a second at exit (measured here: a one-node graph took 1.07 s with it
and 0.10 s without). Flows that nodegraph calls itself (``integration.run``, the
CLI) therefore run with Prefect's heartbeat thread switched off, and the flow body
sends the same events, at the same ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, from a
thread that waits on an event and is never joined. Automations that detect zombie
flow runs from missing heartbeats keep working.

A graph flow called by other code (a subflow, a deployment run) keeps Prefect's own
heartbeats: nothing here applies to it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager

from prefect import __version__ as prefect_version
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.related import tags_as_related_resources
from prefect.events.schemas.events import RelatedResource
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
from prefect.settings.context import get_current_settings

from integration.prefect.settings import updated_settings

# Prefect's own lower bound on the interval.
MINIMUM_SECONDS = 30


@contextmanager
def prefect_heartbeats_off() -> Iterator[int | None]:
    """Switch Prefect's heartbeat thread off for flows started inside; yields the
    interval the flow body should keep instead (``None``: heartbeats are disabled).

    The override is ``updated_settings``: made once while the settings stay the same.
    """
    seconds = get_current_settings().flows.heartbeat_frequency
    with updated_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield None if seconds is None else max(seconds, MINIMUM_SECONDS)


def _event_template() -> tuple[dict[str, str], list[RelatedResource]] | None:
    """The heartbeat event's resource and related resources, as Prefect builds them."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    flow_run = context.flow_run
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
        "prefect.version": prefect_version,
    }
    related: list[RelatedResource] = []
    if flow_run.flow_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": context.flow.name if context.flow else "",
                }
            )
        )
    if flow_run.deployment_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        )
    related += tags_as_related_resources(set(flow_run.tags or []))
    return resource, related


@contextmanager
def flow_run_heartbeats(seconds: int | None) -> Generator[None, None, None]:
    """Send the current flow run's heartbeats every ``seconds`` until the block ends."""
    template = _event_template() if seconds else None
    if template is None or seconds is None:
        yield
        return
    resource, related = template
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related)
            except Exception:  # a missed heartbeat must never fail the run
                pass
            stop.wait(seconds)

    # The copied context carries the flow's settings (its API URL) into the thread.
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(beat,),
        name="nodegraph-heartbeat",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
