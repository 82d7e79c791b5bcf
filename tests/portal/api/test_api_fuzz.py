"""Property-based fuzzing of every endpoint in /api/openapi.json: never a 500, and every
error is a JSON body with a reason."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.access.actors import Actor
from portal.access.api_tokens import create_token

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
    # Crafted shapes, under any field name: a reviewer's 500s.
    st.builds(
        lambda name, shape: json.dumps({name: "@"}).replace('"@"', shape),
        st.sampled_from(["since", "overlapHours", "to", "body", "description", "url", "x"]),
        st.sampled_from(
            [
                '"2026-01-01T00:00:00+99:00"',
                '"9999-99-99"',
                '"9999-12-31T23:59:59-23:59"',
                "9" * 5000,
                "-" + "9" * 5000,
                "[" * 2000 + "]" * 2000,
                "[" * 2000,
                '"\\ud800"',
                '["x", {"y": "\\udfff"}]',
                "NaN",
                "1e999",
            ]
        ),
    ),
)
segments = st.one_of(
    st.text(min_size=1, max_size=30).filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s
    ),
    st.integers(min_value=-5, max_value=10**12).map(str),
    st.just("user@example.com"),
    st.just("9" * 5000),
    st.just("9" * 30),
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


# The reviewer's crafted inputs, each on the endpoint it broke and on every POST endpoint:
# (raw body, the field a 400 must name).
CRAFTED = [
    ('{"since": "2026-01-01T00:00:00+99:00"}', "since"),  # an offset beyond ±24 h
    ('{"since": "9999-99-99"}', "since"),  # well-formed, no such date
    ('{"since": "9999-99-99T00:00:00Z"}', "since"),
    ('{"since": "9999-12-31T23:59:59-23:59"}', "since"),  # past year 9999 in UTC
    ('{"since": "0001-01-01T00:00:00+23:00"}', "since"),  # before year 1 in UTC
    ('{"overlapHours": ' + "9" * 5000 + "}", "overlapHours"),  # past Python's int limit
    ('{"overlapHours": 1e999}', "overlapHours"),  # infinity
    ('{"overlapHours": NaN}', "overlapHours"),  # not JSON at all
    ('{"description": "\\ud800"}', "description"),  # a lone surrogate
    ('{"eventTypes": ["x", {"y": "\\udfff"}]}', "eventTypes[1].y"),
]
DEEP = '{"channel": "mail", "to": ' + "[" * 100_000 + "]" * 100_000 + "}"


def post_raw(client, headers, path, raw, **extra):
    return client.post(path, data=raw, content_type="application/json", **headers, **extra)


def test_crafted_input_is_a_400_naming_the_field(api, client, settings):
    settings.DEBUG = True
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    document, headers = api
    created = post_raw(client, headers, "/api/event-endpoints", '{"url": "http://127.0.0.1:9/x"}')
    endpoint = created.json()["id"]
    problems = []
    for raw, field in CRAFTED:
        path = (
            f"/api/event-endpoints/{endpoint}/replay"
            if field == "since"
            else f"/api/event-endpoints/{endpoint}/rotate-secret"
            if field == "overlapHours"
            else "/api/event-endpoints"
        )
        response = post_raw(client, headers, path, raw)
        if response.status_code != 400 or response.json().get("field") != field:
            problems.append(f"{path} {raw[:60]}: {response.status_code} {response.content[:200]}")
    # A body nested 100,000 deep fits only the send API's 4.5 MB limit.
    response = post_raw(client, headers, "/api/messages", DEEP, HTTP_IDEMPOTENCY_KEY="deep")
    if response.status_code != 400 or response.json().get("field") != "to":
        problems.append(f"100,000 [: {response.status_code} {response.content[:200]}")
    response = post_raw(client, headers, "/api/messages", "[" * 100_000, HTTP_IDEMPOTENCY_KEY="d")
    if response.status_code != 400:
        problems.append(f"100,000 unclosed [: {response.status_code} {response.content[:200]}")
    # Every POST endpoint, every shape: never a 500.
    for template in sorted(document["paths"]):
        if "post" not in document["paths"][template]:
            continue
        path = template.replace("{endpointId}", str(endpoint)).replace("{deliveryId}", "1")
        path = path.replace("{jobId}", "9" * 5000).replace("{messageId}", "9" * 5000)
        for raw, _field in CRAFTED:
            response = post_raw(client, headers, path, raw, HTTP_IDEMPOTENCY_KEY="k")
            if response.status_code >= 500:
                problems.append(f"{path} {raw[:60]}: {response.status_code}")
    assert problems == [], "\n".join(problems)
