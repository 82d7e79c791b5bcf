"""``POST /v1.0/$batch`` (JSON batching, ≤ 20 requests, ``dependsOn`` → 424)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from .graph_common import Ctx, Router
from .httptypes import GraphError, Headers, Request, Response, json_response

MAX_REQUESTS = 20


def _inner_request(ctx: Ctx, spec: dict[str, Any]) -> Request:
    url = str(spec.get("url") or "")
    if url.lower().startswith("http"):
        parts = urlsplit(url)
        path, query = parts.path, parts.query
        if path.lower().startswith("/v1.0"):
            path = path[5:]
    else:
        path, _, query = url.partition("?")
    if not path.startswith("/"):
        path = "/" + path
    headers = Headers({k: str(v) for k, v in (spec.get("headers") or {}).items()})
    headers["Authorization"] = ctx.req.headers.get("Authorization") or ""
    body = spec.get("body")
    raw = b""
    if body is not None:
        if "Content-Type" not in headers:
            raise GraphError(
                400,
                "BadRequest",
                "Content-Type header must be specified when a request body is present.",
            )
        if isinstance(body, str) and "json" not in (headers.get("Content-Type") or ""):
            try:
                raw = base64.b64decode(body)
            except ValueError:
                raw = body.encode()
        else:
            raw = json.dumps(body).encode()
    return Request(
        method=str(spec.get("method") or "GET").upper(),
        path="/v1.0" + path,
        query_string=query,
        headers=headers,
        body=raw,
        peer=ctx.req.peer,
        is_batch_inner=True,
    )


def _render(rid: str, resp: Response) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rid,
        "status": resp.status,
        "headers": {
            k: v
            for k, v in resp.headers.items()
            if k.lower()
            in (
                "content-type",
                "retry-after",
                "location",
                "preference-applied",
                "request-id",
                "client-request-id",
            )
        },
    }
    if resp.body:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "json" in ctype:
            out["body"] = json.loads(resp.body)
        else:
            out["body"] = base64.b64encode(resp.body).decode()
    return out


def batch(ctx: Ctx) -> Response:
    body = ctx.body_json()
    reqs = body.get("requests")
    if not isinstance(reqs, list) or not reqs:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(reqs) > MAX_REQUESTS:
        raise GraphError(
            400, "BadRequest", f"Number of batch requests exceeds the maximum of {MAX_REQUESTS}."
        )
    ids: list[str] = []
    by_id: dict[str, dict[str, Any]] = {}
    for r in reqs:
        if not isinstance(r, dict) or "id" not in r or "url" not in r or "method" not in r:
            raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
        rid = str(r["id"])
        if rid in by_id:
            raise GraphError(400, "BadRequest", f"Batch request id '{rid}' is duplicated.")
        ids.append(rid)
        by_id[rid] = r
    for r in reqs:
        for dep in r.get("dependsOn") or []:
            if str(dep) not in by_id:
                raise GraphError(
                    400, "BadRequest", f"Request '{r['id']}' depends on unknown request '{dep}'."
                )
    results: dict[str, dict[str, Any]] = {}
    statuses: dict[str, int] = {}
    visiting: set[str] = set()

    def run(rid: str) -> int:
        if rid in statuses:
            return statuses[rid]
        if rid in visiting:
            raise GraphError(400, "BadRequest", "Circular dependsOn in batch.")
        visiting.add(rid)
        spec = by_id[rid]
        failed = [
            d for d in (str(x) for x in spec.get("dependsOn") or []) if not 200 <= run(d) < 300
        ]
        if failed:
            statuses[rid] = 424
            results[rid] = {
                "id": rid,
                "status": 424,
                "headers": {},
                "body": {"error": {"code": "FailedDependency", "message": "Failed Dependency"}},
            }
            return 424
        try:
            inner = _inner_request(ctx, spec)
            resp = ctx.app.dispatch(inner)
        except GraphError as exc:
            resp = ctx.app.graph_error_response(exc, ctx.req)
        statuses[rid] = resp.status
        results[rid] = _render(rid, resp)
        return resp.status

    for rid in ids:
        run(rid)
    return json_response(200, {"responses": [results[r] for r in ids]})


def register(router: Router) -> None:
    router.add("POST", "$batch", batch)
