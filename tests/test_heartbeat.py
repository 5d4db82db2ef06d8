"""Flows nodegraph calls itself send their heartbeats from nodegraph's own thread, so
that the run does not wait for Prefect's one-second heartbeat sleep at exit."""

from __future__ import annotations

import time

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings.context import get_current_settings

import integration

ONE_NODE = {
    "name": "beating",
    "nodes": [{"id": "a", "type": "core.add", "params": {"a": 1, "b": 2}}],
}


def _heartbeats(flow_run_id: str, limit_s: float = 30) -> list:
    deadline = time.monotonic() + limit_s
    with get_client(sync_client=True) as client:
        while True:
            # A new filter each time: its default window ends when it is made.
            event_filter = EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            )
            events = client.read_events(filter=event_filter, limit=50).events
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.2)


@pytest.mark.integration
def test_a_run_sends_its_heartbeat_and_restores_prefects_setting(prefect_server, registry):
    before = get_current_settings().flows.heartbeat_frequency
    result = integration.run(ONE_NODE, registry=registry, cache=False)
    assert result.ok and result.outputs == {"a.out": 3}
    assert get_current_settings().flows.heartbeat_frequency == before

    events = _heartbeats(result.flow_run_id)
    # One at the start: the interval (180 s by default) is far longer than the run.
    assert len(events) == 1
    related = {r.id: r.role for r in events[0].related}
    assert any(rid.startswith("prefect.flow.") and role == "flow" for rid, role in related.items())
    assert events[0].resource.name


@pytest.mark.integration
def test_a_graph_flow_called_directly_keeps_prefects_heartbeats(prefect_server, registry):
    flow = integration.to_flow(ONE_NODE, registry=registry, cache=False)
    state = flow(return_state=True)
    assert state.is_completed()
    assert len(_heartbeats(str(state.state_details.flow_run_id))) == 1
