"""Users: list, $select, $top paging, get by id / UPN, 404."""

from __future__ import annotations

from .conftest import MARIA


def test_list_users_paging_and_select(graph):
    r = graph.get("users", params={"$top": "5", "$select": "id,displayName,jobTitle"})
    assert r.status_code == 200
    body = r.json()
    assert len(body["value"]) == 5
    assert set(body["value"][0]) == {"id", "displayName", "jobTitle"}
    assert body["@odata.nextLink"].startswith(graph.emu.graph_url + "/users?")
    seen = [u["id"] for u in body["value"]]
    nxt = body["@odata.nextLink"]
    while nxt:
        page = graph.get(nxt).json()
        seen += [u["id"] for u in page["value"]]
        nxt = page.get("@odata.nextLink")
    assert len(seen) == len(set(seen)) >= 20
    assert "request-id" in r.headers and "client-request-id" in r.headers


def test_default_properties_and_jobs(graph):
    users = graph.get("users", params={"$top": "999"}).json()["value"]
    assert len(users) >= 21
    titles = {u["jobTitle"] for u in users}
    assert {"Dispatcher", "Driver", "Fleet Manager", "Mechanic"} <= titles
    assert "department" not in users[0]
    assert all(u["userPrincipalName"].endswith("@fleetdemo.onmicrosoft.com") for u in users)


def test_get_user_by_upn_and_id(graph):
    u = graph.get(f"users/{MARIA}").json()
    assert u["displayName"] == "Maria Kowalski"
    assert graph.get(f"users/{u['id']}").json()["userPrincipalName"] == MARIA
    r = graph.get("users/nobody@fleetdemo.onmicrosoft.com")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "Request_ResourceNotFound"


def test_filter_users(graph):
    r = graph.get("users", params={"$filter": "jobTitle eq 'Driver'"})
    assert r.status_code == 200
    assert r.json()["value"] and all(u["jobTitle"] == "Driver" for u in r.json()["value"])


def test_client_request_id_echoed(graph):
    r = graph.get("users", headers={"client-request-id": "abc-123"})
    assert r.headers["client-request-id"] == "abc-123"
