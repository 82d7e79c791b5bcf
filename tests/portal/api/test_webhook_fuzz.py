"""Hypothesis fuzzes the receiver: arbitrary bytes, JSON and headers never give a 500, and an
item with a wrong clientState is never stored or processed."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.microsoft.models import LifecycleEvent, MonitoredUser, NotificationInbox
from portal.jobs.models import Job
from tests.integrations.microsoft.webhook_support import make_sub

pytestmark = pytest.mark.django_db
RIGHT = "the-right-client-state"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
URLS = st.sampled_from(["/api/webhooks/mail", "/api/webhooks/teams", "/api/webhooks/lifecycle"])
OK = {200, 202, 400, 405, 413}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
wrong_state = st.one_of(
    st.none(),
    st.integers(),
    st.text().filter(lambda s: s != RIGHT),
    st.just(RIGHT + " "),
    st.just(RIGHT.upper()),
    st.just(RIGHT[:-1]),
)
sub_id = st.sampled_from(["sub-known", "sub-other", "", "sub-known\n", "x" * 100]) | st.text(
    max_size=40
)
items = st.fixed_dictionaries(
    {"subscriptionId": sub_id, "clientState": wrong_state},
    optional={
        "changeType": st.sampled_from(["created", "updated", "deleted"]) | st.text(),
        "resource": st.text(),
        "lifecycleEvent": st.text(max_size=40),
        "resourceData": st.dictionaries(
            st.sampled_from(["id", "@odata.etag"]), st.text() | st.integers()
        ),
        "id": st.text(),
    },
)
# WSGI hands headers and the query string over as latin-1 text (PEP 3333).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0xFF), max_size=60)


@pytest.fixture
def known(db):
    user = MonitoredUser.objects.create(identifier="u@x", graph_id="u1")
    make_sub(user, graph_id="sub-known", client_state=RIGHT)
    make_sub(user, graph_id="sub-other", client_state="another-secret", kind="chatMessages")


def nothing_stored() -> bool:
    return not (
        NotificationInbox.objects.exists()
        or LifecycleEvent.objects.exists()
        or Job.objects.exists()
    )


@FUZZ
@given(url=URLS, body=st.binary(max_size=2000), content_type=header_text, query=header_text)
def test_arbitrary_bytes_never_give_a_500(client, known, url, body, content_type, query):
    response = client.generic("POST", url, data=body, content_type=content_type, QUERY_STRING=query)
    assert response.status_code in OK
    if response.status_code == 200:
        assert response["Content-Type"].startswith("text/plain")
        assert response["X-Content-Type-Options"] == "nosniff"
    assert nothing_stored()


@FUZZ
@given(
    url=URLS,
    body=json_values,
    headers=st.dictionaries(
        st.sampled_from(
            [
                "HTTP_X_FORWARDED_FOR",
                "HTTP_USER_AGENT",
                "HTTP_COOKIE",
                "HTTP_X_REQUEST_ID",
                "HTTP_CONTENT_ENCODING",
                "CONTENT_LENGTH",
            ]
        ),
        header_text,
        max_size=4,
    ),
)
def test_arbitrary_json_and_headers_never_give_a_500(client, known, url, body, headers):
    headers.pop("CONTENT_LENGTH", None)  # a lying length is the server's business
    response = client.generic(
        "POST", url, data=json.dumps(body).encode(), content_type="application/json", **headers
    )
    assert response.status_code in OK
    assert nothing_stored()


@FUZZ
@given(url=URLS, batch=st.lists(items, min_size=1, max_size=12))
def test_items_with_a_wrong_client_state_are_never_stored(client, known, url, batch):
    response = client.post(
        url, data=json.dumps({"value": batch}).encode(), content_type="application/json"
    )
    assert response.status_code in (202, 400)
    assert nothing_stored()


@FUZZ
@given(batch=st.lists(items, min_size=1, max_size=8), good=st.integers(0, 3))
def test_only_the_items_with_the_right_client_state_are_stored(client, known, batch, good):
    NotificationInbox.objects.all().delete()
    valid = [
        {
            "subscriptionId": "sub-known",
            "clientState": RIGHT,
            "changeType": "created",
            "resource": f"Users/u1/Messages/m{n}",
            "resourceData": {"id": f"m{n}", "@odata.etag": "e\x00\ud800"},
        }
        for n in range(good)
    ]
    response = client.post(
        "/api/webhooks/mail",
        data=json.dumps({"value": batch + valid}).encode(),
        content_type="application/json",
    )
    if response.status_code == 400:  # a malformed item fails the whole request
        assert not NotificationInbox.objects.exists()
        return
    assert response.status_code == 202
    stored = set(NotificationInbox.objects.values_list("resource_id", flat=True))
    assert stored == {f"m{n}" for n in range(good)}
