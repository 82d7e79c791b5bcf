"""Fixtures shared by the recovery tests and the recovery page's tests."""

from unittest import mock

import pytest

from integrations.microsoft import subscriptions, verify


@pytest.fixture
def fake_graph(stub, monkeypatch):
    """The Graph-facing services, replaced: cleanup and setup succeed, verify passes."""
    seen = []

    def summary(name):
        def service(actor, *, dry_run=False):
            seen.append((name, actor.request_id))
            s = subscriptions.Summary(name, dry_run=dry_run)
            s.created.append("driver1 messages")
            return s

        return service

    stub(subscriptions, "setup", side_effect=summary("setup_webhooks"))
    stub(subscriptions, "cleanup", side_effect=summary("cleanup_webhooks"))
    token_ok = mock.create_autospec(
        verify.check_token, return_value=verify.CheckResult("Token", True, "issued")
    )
    monkeypatch.setattr(verify, "CHECKS", [token_ok])
    return seen
