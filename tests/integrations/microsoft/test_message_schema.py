"""The API's documented request schema and the send service's validation agree: the schema
is generated from the validation's declarations, and each rule the schema states is walked
here against both (a small checker for the JSON Schema keywords the document uses)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from integrations.microsoft.messaging import schema
from integrations.microsoft.messaging.errors import InvalidMessage

VALID = {
    "mail": {
        "channel": "mail",
        "from": "dispatch@fleet.example",
        "to": ["driver@fleet.example"],
        "subject": "Route change",
        "body": "Take the A7.",
    },
    "teams": {"channel": "teams", "chatId": "19:abc@thread.v2", "body": "Gate 2 is open."},
}


def _is_email(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def conforms(instance: Any, node: dict[str, Any]) -> bool:
    """Does `instance` satisfy `node`? Only the keywords the document uses; others fail."""
    known = {
        "oneOf", "anyOf", "not", "type", "required", "properties", "additionalProperties",
        "const", "enum", "default", "format", "pattern", "minLength", "maxLength",
        "description", "items", "minItems", "maxItems",
    }  # fmt: skip
    assert set(node) <= known, f"the checker does not know {set(node) - known}"
    checks = []
    if "oneOf" in node:
        checks.append(sum(conforms(instance, option) for option in node["oneOf"]) == 1)
    if "anyOf" in node:
        checks.append(any(conforms(instance, option) for option in node["anyOf"]))
    if "not" in node:
        checks.append(not conforms(instance, node["not"]))
    if "const" in node:
        checks.append(instance == node["const"])
    if "enum" in node:
        checks.append(instance in node["enum"])
    types = {"object": dict, "array": list, "string": str}
    if "type" in node:
        checks.append(isinstance(instance, types[node["type"]]))
    if isinstance(instance, dict):
        properties = node.get("properties", {})
        checks.append(all(name in instance for name in node.get("required", [])))
        if node.get("additionalProperties") is False:
            checks.append(not set(instance) - set(properties))
        checks += [conforms(v, properties[k]) for k, v in instance.items() if k in properties]
    if isinstance(instance, list):
        checks.append(node.get("minItems", 0) <= len(instance) <= node.get("maxItems", 10**9))
        checks += [conforms(item, node["items"]) for item in instance if "items" in node]
    if isinstance(instance, str):
        checks.append(node.get("minLength", 0) <= len(instance) <= node.get("maxLength", 10**9))
        checks.append("pattern" not in node or bool(re.search(node["pattern"], instance)))
        checks.append(node.get("format") != "email" or _is_email(instance))
    return all(checks)


def accepted(body: dict[str, Any]) -> bool:
    try:
        schema.from_json(body)
    except InvalidMessage:
        return False
    return True


def mutations() -> list[tuple[str, dict[str, Any]]]:
    """For every property the schema documents, values on both sides of each of its rules."""
    cases: list[tuple[str, dict[str, Any]]] = []
    for variant in schema.json_schema()["oneOf"]:
        channel = variant["properties"]["channel"]["const"]
        base = VALID[channel]
        cases.append((f"{channel}: as documented", base))
        cases.append((f"{channel}: an undocumented field", {**base, "priority": "high"}))
        for name in variant["required"]:
            cases.append(
                (f"{channel}: without {name}", {k: v for k, v in base.items() if k != name})
            )
        for name, rule in variant["properties"].items():
            tried: list[Any] = [7, None]
            if "enum" in rule:
                tried += [*rule["enum"], "other"]
            if rule.get("type") == "string":
                tried += ["", "  ", "x", "a" * rule.get("maxLength", 300)]
                tried += ["a" * (rule.get("maxLength", 300) + 1)]
                if rule.get("format") == "email":
                    tried += ["ops@fleet.example", "ops@", " ops@fleet.example "]
            if rule.get("type") == "array":
                tried += [[], ["ops@fleet.example"], ["ops@"], "ops@fleet.example"]
                tried += [[f"d{i}@fleet.example" for i in range(rule["maxItems"] + 1)]]
            for value in tried:
                body = {**base, name: value}
                if value is None:
                    body.pop(name)
                cases.append((f"{channel}: {name}={str(value)[:30]!r}", body))
    return cases


# Deliberately more lenient than documented: blanks around an address are dropped.
TOLERATED = {"mail: from=' ops@fleet.example '"}


@pytest.mark.parametrize(("case", "body"), mutations(), ids=[c for c, _ in mutations()])
def test_the_documented_schema_and_the_validation_agree(case, body):
    documented = conforms(body, schema.json_schema())
    if case in TOLERATED:
        assert not documented and accepted(body)
    else:
        assert documented == accepted(body), case


def test_the_openapi_document_serves_the_generated_schema(client):
    document = client.get("/api/openapi.json").json()
    served = document["paths"]["/api/messages"]["post"]["requestBody"]["content"]
    assert served["application/json"]["schema"] == schema.json_schema()
