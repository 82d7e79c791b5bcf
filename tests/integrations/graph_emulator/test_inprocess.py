"""In-process checks of the request pipeline (no sockets)."""

from __future__ import annotations

import argparse

from integrations.graph_emulator.cli import add_arguments
from integrations.graph_emulator.httptypes import Headers, Request
from integrations.graph_emulator.server import EmulatorApp


def _token(app: EmulatorApp) -> str:
    form = (
        f"grant_type=client_credentials&client_id={app.ident['client_id']}"
        f"&client_secret={app.ident['client_secret']}"
        "&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
    )
    resp = app.dispatch(
        Request(
            "POST",
            f"/{app.ident['tenant_id']}/oauth2/v2.0/token",
            headers=Headers({"Content-Type": "application/x-www-form-urlencoded"}),
            body=form.encode(),
        )
    )
    assert resp.status == 200
    return resp.json()["access_token"]


def test_handler_exception_becomes_graph_500(tmp_path):
    app = EmulatorApp(tmp_path)

    def boom(ctx):
        raise RuntimeError("kaput")

    app.router.add("GET", "boom", boom)
    resp = app.dispatch(
        Request("GET", "/v1.0/boom", headers=Headers({"Authorization": f"Bearer {_token(app)}"}))
    )
    assert resp.status == 500
    err = resp.json()["error"]
    assert err["code"] == "InternalServerError"
    assert set(err["innerError"]) == {"date", "request-id", "client-request-id"}
    # the app keeps serving
    ok = app.dispatch(
        Request("GET", "/v1.0/users", headers=Headers({"Authorization": f"Bearer {_token(app)}"}))
    )
    assert ok.status == 200


def test_request_log_is_bounded(tmp_path):
    app = EmulatorApp(tmp_path, config={"logs": {"request_log_size": 10}})
    for _ in range(25):
        app.dispatch(Request("GET", "/v1.0/users"))
    assert len(app.request_log) == 10
    assert app.request_log[-1]["status"] == 401


def test_the_demo_apps_redirect_uris_are_registered_and_survive_a_reset(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    opts = parser.parse_args(
        ["--redirect-uri", "http://127.0.0.1:8000/a", "--redirect-uri", "http://localhost:8000/a"]
    )
    app = EmulatorApp(tmp_path, redirect_uris=opts.redirect_uris)
    uris = ["http://127.0.0.1:8000/a", "http://localhost:8000/a"]
    assert app.state.apps[app.ident["client_id"]].redirect_uris == uris
    app.state.apps[app.ident["client_id"]].redirect_uris = []
    app.reset()
    assert app.state.apps[app.ident["client_id"]].redirect_uris == uris
    # Without the option the demo app accepts no redirect at all (as an unconfigured app).
    (tmp_path / "bare").mkdir()
    bare = EmulatorApp(tmp_path / "bare")
    assert [a.redirect_uris for a in bare.state.apps.values()] == [[]]


def test_a_token_used_before_is_still_checked_for_expiry(tmp_path):
    # The signature check is remembered per token; the lifetime check must run every time.
    app = EmulatorApp(tmp_path)
    headers = Headers({"Authorization": f"Bearer {_token(app)}"})
    assert app.dispatch(Request("GET", "/v1.0/users", headers=headers)).status == 200
    app.clock.set_offset(3600)
    resp = app.dispatch(Request("GET", "/v1.0/users", headers=headers))
    assert resp.status == 401
    assert "expired" in resp.json()["error"]["message"]
