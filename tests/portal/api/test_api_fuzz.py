"""Property-based fuzzing of every endpoint in /api/openapi.json: never a 500, and every
error is a JSON body with a reason."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.access.actors import Actor
from portal.api.tokens import create_token

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["userId", "resourceType", "type", "status", "errorSignature", "x"]),
        json_values,
        max_size=4,
    ),
    # Send-API shaped bodies: the right field names with anything in them.
    st.fixed_dictionaries(
        {"channel": st.sampled_from(["mail", "teams", "x"])},
        optional={
            name: json_values
            | st.just("dispatch@fleet.example")
            | st.lists(st.emails(), max_size=3)
            for name in (
                "from",
                "to",
                "cc",
                "bcc",
                "subject",
                "body",
                "contentType",
                "importance",
                "chatId",
                "toUser",
                "teamId",
                "channelId",
            )
        },
    ),
    json_values.map(json.dumps),
    st.binary(max_size=200),
)
segments = st.one_of(
    st.text(min_size=1, max_size=30).filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s
    ),
    st.integers(min_value=-5, max_value=10**12).map(str),
    st.just("user@example.com"),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ]
)


@pytest.fixture
def api(client, personas, settings):
    settings.MESSAGING_SENDER_MAILBOXES = ["dispatch@fleet.example"]  # some sends succeed
    document = client.get("/api/openapi.json").json()
    raw = create_token(Actor.system("tests"), personas["admin"].username, "fuzz")[1]
    return document, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def check(response):
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        body = response.json()
        assert body["error"] and isinstance(body["detail"], str)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_endpoint_answers_500_to_anything(api, client, data):
    document, headers = api
    path = data.draw(st.sampled_from(sorted(document["paths"])))
    operations = document["paths"][path]
    method = data.draw(st.sampled_from(sorted(operations)))
    concrete = path
    for name in [p["name"] for p in operations[method]["parameters"] if p["in"] == "path"]:
        concrete = concrete.replace("{" + name + "}", data.draw(segments))
    query = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["limit", "before", "type", "after", "status", "channel", "wait", "types"]
            ),
            st.text(max_size=12),
            max_size=3,
        )
    )
    with_token = data.draw(st.booleans())
    key = data.draw(st.none() | st.text(max_size=20) | st.uuids().map(str))
    if key is not None:
        headers = {**headers, "HTTP_IDEMPOTENCY_KEY": key}
    call = getattr(client, method)
    if method == "post":
        body = data.draw(bodies)
        payload = body if isinstance(body, str | bytes) else json.dumps(body)
        response = call(
            concrete + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""),
            data=payload,
            content_type=data.draw(content_types),
            **(headers if with_token else {}),
        )
    else:
        response = call(concrete, query, **(headers if with_token else {}))
    check(response)
