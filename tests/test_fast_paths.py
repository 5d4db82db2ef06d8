"""Prefect's fixed costs that nodegraph avoids: each fast path pinned to the Prefect
behaviour it relies on, so that an upgrade that changes it fails here first."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.context import SyncClientContext
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    temporary_settings,
)
from prefect.settings.context import get_current_settings

from integration.prefect.client import reused_client
from integration.prefect.heartbeat import prefect_heartbeats_off
from integration.prefect.settings import updated_settings


def test_heartbeats_off_reuses_its_settings_and_follows_changed_ones():
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        outer = get_current_settings()
        with prefect_heartbeats_off() as seconds:
            first = get_current_settings()
        with prefect_heartbeats_off():
            second = get_current_settings()
        assert seconds == 45 and first.flows.heartbeat_frequency is None
        assert second is first  # made once while the settings stay the same
        # Everything else is the caller's.
        assert first.api.url == outer.api.url and first.home == outer.home
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            with prefect_heartbeats_off():
                changed = get_current_settings()
        assert changed is not first and changed.api.url == "http://127.0.0.1:9/api"
        assert changed.flows.heartbeat_frequency is None
        assert get_current_settings() is outer


def test_updated_settings_are_keyed_by_their_updates():
    with updated_settings({PREFECT_CLIENT_MAX_RETRIES: 0}) as no_retries:
        assert get_current_settings().client.max_retries == 0
    with updated_settings({PREFECT_CLIENT_MAX_RETRIES: 2}) as two:
        assert two.client.max_retries == 2 and two is not no_retries
    with updated_settings({PREFECT_CLIENT_MAX_RETRIES: 0}) as again:
        assert again is no_retries


seen_clients: list = []  # strong references, so no two clients can share an id


@flow(name="which-client")
def which_client() -> int:
    context = SyncClientContext.get()
    assert context is not None
    seen_clients.append(context.client)
    return id(context.client)


@pytest.mark.integration
def test_flow_runs_inside_reused_client_share_one_client(prefect_server):
    # Prefect's flow engine takes the current client context (get_or_create) when
    # there is one: that is what reused_client relies on.
    with reused_client():
        first = which_client()
    with reused_client():
        second = which_client()
    assert first == second
    # Without it, each flow run builds a client of its own (the cost avoided).
    assert which_client() != which_client()
    assert SyncClientContext.get() is None  # nothing stays current outside
    # A caller's own client context is left alone.
    with SyncClientContext.get_or_create() as own, reused_client():
        assert which_client() == id(own.client)
