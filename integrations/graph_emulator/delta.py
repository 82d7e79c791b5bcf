"""Delta query engine shared by mail-folder and Teams delta routes.

Tokens are opaque, stored server-side (LRU-capped), and map to a cursor:
``since`` (last change sequence already delivered), the frozen list of entries
of the current round and an offset.  A page never carries both a next and a
delta link.  Expired / evicted tokens and rounds older than a stream's
tombstone floor answer ``410 SyncStateNotFound``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .graph_common import Ctx
from .httptypes import GraphError, Response, json_response
from .odata import compile_filter, parse_select, prefer_maxpagesize

StreamKey = tuple[str, ...]
Renderer = Callable[[StreamKey, str, list[str] | None], dict[str, Any] | None]


def _gone(ctx: Ctx) -> GraphError:
    seq = ctx.state.seq
    return GraphError(
        410,
        "SyncStateNotFound",
        f"The sync state generation is not found; generation={max(0, seq - 8)};"
        f"[highest={seq}][{seq}][{max(0, seq - 2)}][{max(0, seq - 1)}].",
    )


def delta_response(  # noqa: C901 (Graph's delta paging rules, read in one place)
    ctx: Ctx,
    *,
    scope: dict[str, Any],
    streams: list[StreamKey],
    render: Renderer,
    context: str,
    removed_type: str,
    max_top: int | None = None,
) -> Response:
    """Serve one delta page. Caller holds the state lock.

    `max_top`: the route pages with $top up to this and ignores Prefer: odata.maxpagesize
    (getAllMessages/delta, as Graph documents it); None: Prefer is honoured (mail)."""
    st = ctx.state
    q = ctx.query
    cfg = ctx.app.config.section("delta")
    prefer = None if max_top else prefer_maxpagesize(ctx.req.headers.get("Prefer"))
    token = q.get("$skiptoken") or q.get("$deltatoken")
    if token:
        cursor = st.cursors.get(token)
        if cursor is None or cursor.get("scope") != scope:
            raise _gone(ctx)
        st.cursors.move_to_end(token)
        cursor = dict(cursor)
    else:
        change_type = q.get("changetype")
        if change_type and change_type not in ("created", "updated", "deleted"):
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                f"The value '{change_type}' of changeType is not valid.",
            )
        filt = q.get("$filter")
        if filt:
            compile_filter(filt)  # validate early
        cursor = {
            "scope": scope,
            "user_id": scope.get("user_id"),
            "since": 0,
            "select": parse_select(q.get("$select")),
            "filter": filt,
            "changeType": change_type,
            "entries": None,
            "offset": 0,
            "top": q.get("$top"),
        }
    page_size = (
        prefer
        or (int(cursor["top"]) if cursor.get("top") else None)
        or int(cfg["default_page_size"])
    )
    page_size = max(1, min(page_size, max_top or int(cfg["max_page_size"])))

    if cursor["entries"] is None:
        since = int(cursor["since"])
        hi = st.seq
        collected: list[tuple[int, str, StreamKey, bool, int]] = []
        for key in streams:
            stream = st.streams.get(key)
            if stream is None:
                continue
            if since and since < stream.floor:
                raise _gone(ctx)
            for item_id, e in stream.entries.items():
                if since < e.seq <= hi:
                    collected.append((e.seq, item_id, key, e.removed, e.created_seq))
        collected.sort()
        ct = cursor.get("changeType")
        pred = compile_filter(cursor["filter"]) if cursor.get("filter") else None
        entries = []
        for seq, item_id, key, removed, created_seq in collected:
            if removed and not since:
                continue  # initial round: current state only
            if ct == "deleted" and not removed:
                continue
            if ct == "created" and (removed or created_seq <= since):
                continue
            if ct == "updated" and (removed or created_seq > since):
                continue
            if pred is not None and not removed:
                obj = render(key, item_id, None)
                if obj is None or not pred(obj):
                    continue
            entries.append([seq, item_id, list(key), removed])
        cursor.update({"entries": entries, "offset": 0, "hi": hi})

    entries = cursor["entries"]
    offset = int(cursor["offset"])
    page = entries[offset : offset + page_size]
    value: list[dict[str, Any]] = []
    for _seq, item_id, key, removed in page:
        obj = None if removed else render(tuple(key), item_id, cursor.get("select"))
        if obj is None:
            value.append(
                {"@odata.type": removed_type, "id": item_id, "@removed": {"reason": "deleted"}}
            )
        else:
            value.append(obj)
    body: dict[str, Any] = {
        "@odata.context": f"{ctx.app.graph_url}/$metadata#{context}",
        "value": value,
    }
    base = ctx.app.graph_url + ctx.req.path[len("/v1.0") :]
    if offset + page_size < len(entries):
        nxt = dict(cursor, offset=offset + page_size)
        body["@odata.nextLink"] = f"{base}?$skiptoken={st.store_cursor(nxt)}"
    else:
        since = int(cursor["hi"])
        replay = float(cfg["replay_probability"])
        if replay and entries and ctx.app.rng.random() < replay:
            # replay: the next round repeats some already-delivered changes
            pick = ctx.app.rng.choice(entries)
            floor = max(
                (st.streams[tuple(k)].floor for k in streams if tuple(k) in st.streams), default=0
            )
            since = max(floor, int(pick[0]) - 1)
        nxt = {
            "scope": scope,
            "user_id": scope.get("user_id"),
            "since": since,
            "select": cursor.get("select"),
            "filter": cursor.get("filter"),
            "changeType": cursor.get("changeType"),
            "entries": None,
            "offset": 0,
            "top": cursor.get("top"),
        }
        body["@odata.deltaLink"] = f"{base}?$deltatoken={st.store_cursor(nxt)}"
    headers = {"Preference-Applied": f"odata.maxpagesize={page_size}"} if prefer else {}
    return json_response(200, body, headers)
