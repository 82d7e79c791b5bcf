"""HTTPS server, request pipeline and process entry point (:func:`run`)."""

from __future__ import annotations

import contextlib
import email.utils
import gc
import json
import logging
import os
import random
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import (
    control,
    graph_batch,
    graph_mail,
    graph_subscriptions,
    graph_teams,
    outbound,
    sign_in,
)
from .certs import ensure_certs, server_context
from .config import Clock, Config
from .delivery import DeliveryManager
from .faults import FaultRegistry, FaultRule
from .graph_common import Ctx, Router, normalize_segments
from .httptypes import (
    GraphError,
    Headers,
    Request,
    Response,
    graph_error_body,
    iso,
    json_response,
)
from .identity import AadError, IdentityService, aad_error_response
from .seed import DEFAULT_SEED, seed_extra_users, seed_tenant
from .state import App, EmulatorState, Secret
from .throttling import Throttler

log = logging.getLogger("graph_emulator")

IDENTITY_FILE = "emulator-identity.json"
AGS_DIAGNOSTIC = json.dumps(
    {
        "ServerInfo": {
            "DataCenter": "Local Emulator",
            "Slice": "E",
            "Ring": "0",
            "ScaleUnit": "000",
            "RoleInstance": "EMU",
        }
    }
)
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)
DEMO_TENANT_FILE = "demo-tenant.json"
# Demo mode: a workload identity token kept fresh here, as Kubernetes projects one.
WORKLOAD_TOKEN_FILE = "workload-identity-token"
DOMAIN = "fleetdemo.onmicrosoft.com"
STATUS_CODES = {
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "SyncStateNotFound",
}


def _load_identity(state_dir: Path, control_token: str | None) -> dict[str, Any]:
    path = state_dir / IDENTITY_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            log.warning("ignoring unreadable %s", path)
            data = {}
    changed = False
    defaults = {
        "tenant_id": lambda: str(uuid.uuid4()),
        "client_id": lambda: str(uuid.uuid4()),
        "client_secret": lambda: secrets.token_urlsafe(30).replace("-", "~")[:40],
        "secret_key_id": lambda: str(uuid.uuid4()),
        "service_principal_id": lambda: str(uuid.uuid4()),
        "control_token": lambda: secrets.token_urlsafe(32),
        "signing_key": lambda: secrets.token_hex(32),
    }
    for key, make in defaults.items():
        if not data.get(key):
            data[key] = make()
            changed = True
    if control_token and data["control_token"] != control_token:
        data["control_token"] = control_token
        changed = True
    if changed:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return data


def _with_local_receivers(config: dict[str, Any] | None) -> dict[str, Any]:
    """The demo's portal listens on loopback http: demo mode opts in to local receivers
    (unless its config says otherwise); a reset keeps that."""
    merged = {section: dict(values) for section, values in (config or {}).items()}
    for section, values in outbound.LOCAL_RECEIVER_CONFIG.items():
        merged[section] = {**values, **merged.get(section, {})}
    return merged


class EmulatorApp:
    """Everything except the socket layer; usable in-process for unit tests."""

    def __init__(
        self,
        state_dir: Path,
        *,
        control_token: str | None = None,
        config: dict[str, Any] | None = None,
        seed: int = DEFAULT_SEED,
        demo: bool = False,
        redirect_uris: list[str] | None = None,
        extra_users: int = 0,
    ) -> None:
        self.state_dir = state_dir
        # Users seeded beside the demo's (seed.seed_extra_users): a tenant of fleet size.
        self.extra_users = extra_users
        # Registered on the demo app (again after every reset); none means none allowed.
        self.redirect_uris = list(redirect_uris or [])
        self.seed = seed
        self.demo = demo
        self.config = Config(_with_local_receivers(config) if demo else config)
        self.clock = Clock()
        self.rng = random.Random()
        self.ident = _load_identity(state_dir, control_token)
        self.control_token: str = self.ident["control_token"]
        self.state = self._fresh_state()
        self.identity = IdentityService(self.state, bytes.fromhex(self.ident["signing_key"]))
        self.oidc_key = sign_in.SigningKey(state_dir)
        self.identity.oidc_key = self.oidc_key
        self.throttler = Throttler(self.config)
        self.faults = FaultRegistry(self.rng)
        self.delivery = DeliveryManager(self.state, self.config, self.rng)
        self.router = Router()
        for module in (graph_mail, graph_teams, graph_subscriptions, graph_batch):
            module.register(self.router)
        self.request_log: deque[dict[str, Any]] = deque(
            maxlen=int(self.config.get("logs", "request_log_size"))
        )
        self._log_lock = threading.Lock()
        self._log_seq = 0
        self.base_url = "https://127.0.0.1"
        self.started_wall = time.time()
        self._demo_thread: threading.Thread | None = None
        self._outbox_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.apply_limits()

    # ------------------------------------------------------------------ state

    def _fresh_state(self) -> EmulatorState:
        st = EmulatorState(self.clock, self.ident["tenant_id"], DOMAIN)
        st.apps[self.ident["client_id"]] = App(
            client_id=self.ident["client_id"],
            display_name="Fleet Graph Portal (demo)",
            sp_id=self.ident["service_principal_id"],
            secrets=[
                Secret(
                    key_id=self.ident["secret_key_id"],
                    value=self.ident["client_secret"],
                    display_name="demo secret",
                    start=self.clock.now(),
                )
            ],
            redirect_uris=list(self.redirect_uris),
        )
        with st.lock:
            seed_tenant(st, self.seed)
            if self.extra_users:
                seed_extra_users(st, self.extra_users, self.seed)
            sign_in.seed_demo_profiles(st)
        return st

    def apply_limits(self) -> None:
        st = self.state
        st.tombstone_cap = int(self.config.get("delta", "tombstone_cap"))
        st.max_cursors = int(self.config.get("delta", "max_cursors"))

    def reset(self) -> None:
        """Back to the seeded state: data, config, faults, logs, clock."""
        self.config.reset()
        self.clock.set_offset(0)
        self.faults.clear()
        self.throttler.reset()
        self.delivery.reset()
        fresh = self._fresh_state()
        with self.state.lock:
            lock, notifier = self.state.lock, self.state.notifier
            self.state.__dict__.update(fresh.__dict__)
            self.state.lock, self.state.notifier = lock, notifier
            self.state.clock = self.clock
        self.apply_limits()
        with self._log_lock:
            self.request_log.clear()
        log.info("state reset to the seeded demo tenant")

    @property
    def log_seq(self) -> int:
        return self._log_seq

    @property
    def graph_url(self) -> str:
        return self.base_url + "/v1.0"

    def set_base_url(self, url: str) -> None:
        self.base_url = url
        self.identity.base_url = url

    @property
    def workload_token_path(self) -> Path:
        return (self.state_dir / WORKLOAD_TOKEN_FILE).resolve()

    def tenant_info(self, ca_path: Path | None = None) -> dict[str, Any]:
        with self.state.lock:
            sa = self.state.service_account_upn
        return {
            "tenant_id": self.ident["tenant_id"],
            "tenant_domain": DOMAIN,
            "client_id": self.ident["client_id"],
            "client_secret": self.ident["client_secret"],
            "authority_host": self.base_url,
            "authority": f"{self.base_url}/{self.ident['tenant_id']}",
            "graph_url": self.graph_url,
            "ca_bundle": str(ca_path.resolve()) if ca_path else None,
            "control_token": self.control_token,
            "control_url": f"{self.base_url}/_emulator",
            "service_account_upn": sa,
            # Demo mode keeps a workload identity token here (MICROSOFT_CLIENT_ASSERTION_FILE).
            "workload_token_file": str(self.workload_token_path) if self.demo else None,
            # Who can "Sign in with Microsoft" on the demo, with the portal role they get.
            "sign_in_staff": {
                f"{local}@{DOMAIN}": roles[0].removeprefix("Portal.").lower()
                for local, roles in sign_in.DEMO_ROLES.items()
            },
        }

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        self.delivery.start()
        self._outbox_thread = threading.Thread(
            target=self._outbox_loop, name="graph-emu-outbox", daemon=True
        )
        self._outbox_thread.start()
        if self.demo:
            from .demo import traffic_loop, workload_token_loop

            self._demo_thread = threading.Thread(
                target=traffic_loop, args=(self, self._stop), name="graph-emu-demo", daemon=True
            )
            self._demo_thread.start()
            threading.Thread(
                target=workload_token_loop,
                args=(self, self.workload_token_path, self._stop),
                name="graph-emu-workload-token",
                daemon=True,
            ).start()

    def settle_outbox(self) -> None:
        """Drafts whose send delay has passed reach Sent Items (and their recipients)."""
        if self.state.outbox:
            with self.state.lock:
                graph_mail.settle_outbox(self.state)

    def _outbox_loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.settle_outbox()
            except Exception:
                log.exception("settling the outbox failed")

    def stop(self) -> None:
        self._stop.set()
        self.delivery.stop()
        if self._outbox_thread:
            self._outbox_thread.join(2)
        if self._demo_thread:
            self._demo_thread.join(2)

    # ------------------------------------------------------------------ pipeline

    def dispatch(self, req: Request) -> Response:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        client_request_id = req.headers.get("client-request-id") or request_id
        req.meta.update({"request_id": request_id, "client_request_id": client_request_id})
        try:
            # Due sends land before any answer, so what a client reads is never older than
            # the delay it was told (also without the background thread, in-process).
            self.settle_outbox()
            if req.path.startswith("/_emulator"):
                resp = control.handle(self, req)
            elif req.path == "/v1.0" or req.path.startswith("/v1.0/"):
                resp = self.handle_graph(req)
            else:
                resp = self.handle_identity(req)
        except Exception:
            log.exception("unhandled error for %s %s", req.method, req.path)
            resp = self.graph_error_response(
                GraphError(500, "InternalServerError", "An internal server error occurred."), req
            )
        self._log(req, resp, started)
        return resp

    def graph_error_response(self, exc: GraphError, req: Request) -> Response:
        rid = req.meta.get("request_id") or str(uuid.uuid4())
        crid = req.meta.get("client_request_id") or rid
        body = graph_error_body(exc.code, exc.message, rid, crid, self.clock.now())
        return json_response(exc.status, body, exc.headers)

    def _fault_response(self, rule: FaultRule, req: Request, graph: bool) -> Response:
        headers = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
        if graph:
            code = STATUS_CODES.get(rule.status, "UnknownError")
            msg = {
                429: "Too many requests. Please retry after the period indicated by the "
                "Retry-After header.",
                503: "The service is temporarily unavailable.",
                504: "The gateway timed out.",
            }.get(rule.status, "Injected fault.")
            if rule.body:
                return json_response(rule.status, rule.body, headers)
            return self.graph_error_response(GraphError(rule.status, code, msg, headers), req)
        return aad_error_response(
            AadError(
                rule.status,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
                headers,
            ),
            self.clock.now(),
        )

    def mark_throttled(self, ctx: Ctx) -> None:
        ctx.req.meta["throttled"] = True

    def handle_graph(self, req: Request) -> Response:
        try:
            resp = self._graph_inner(req)
        except GraphError as exc:
            resp = self.graph_error_response(exc, req)
        if not resp.reset_connection:
            resp.headers["request-id"] = req.meta["request_id"]
            resp.headers["client-request-id"] = req.meta["client_request_id"]
            resp.headers["x-ms-ags-diagnostic"] = AGS_DIAGNOSTIC
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
            if "Cache-Control" not in resp.headers:
                resp.headers["Cache-Control"] = "no-cache"
        return resp

    def _graph_inner(self, req: Request) -> Response:
        rule = self.faults.match(req.method, req.path)
        req.meta["fault"] = rule.id if rule else None
        if rule is not None and rule.perform:
            return self._perform_then_fault(rule, req)
        if rule is not None and rule.kind == "reset":
            if req.is_batch_inner:
                raise GraphError(504, "GatewayTimeout", "The gateway timed out.")
            return Response(0, reset_connection=True)
        if rule is not None and rule.kind == "status":
            return self._fault_response(rule, req, graph=True)
        return self._graph_route(req, rule)

    def _graph_route(self, req: Request, rule: FaultRule | None) -> Response:
        principal = self.identity.authenticate(req)
        req.meta["app_id"] = principal.app_id
        segs = normalize_segments(req.segments[1:])
        if segs and segs[0].lower() == "me":
            if not principal.delegated:
                raise GraphError(
                    400,
                    "BadRequest",
                    "/me request is only valid with delegated authentication flow.",
                )
            segs = ["users", principal.user_id or "", *segs[1:]]
        route, params = self.router.resolve(req.method, segs)
        ctx = Ctx(self, req, principal, params, segs)
        mailbox = None
        if route.mailbox_param:
            with self.state.lock:
                user = self.state.resolve_user(params[route.mailbox_param])
            mailbox = user["id"] if user else None
        if mailbox:
            req.meta["mailbox"] = mailbox
            rej = self.throttler.acquire_mailbox(principal.app_id, mailbox)
            if rej is not None:
                req.meta["throttled"] = True
                raise GraphError(429, rej.code, rej.message, {"Retry-After": str(rej.retry_after)})
        try:
            if rule is not None and rule.kind == "latency":
                time.sleep(rule.latency_ms / 1000.0)
            resp = route.handler(ctx)
        finally:
            if mailbox:
                self.throttler.release_mailbox(principal.app_id, mailbox)
        return resp

    def _perform_then_fault(self, rule: FaultRule, req: Request) -> Response:
        """The request takes effect, but the client learns nothing of it: a 429/5xx instead
        of the answer, an answer later than its read timeout, or a reset connection."""
        # A request Graph refuses on its own (401, 403, 404...) is answered as refused.
        resp = self._graph_route(req, None)
        if rule.kind == "latency":
            time.sleep(rule.latency_ms / 1000.0)
            return resp
        if rule.kind == "reset":
            if req.is_batch_inner:
                raise GraphError(504, "GatewayTimeout", "The gateway timed out.")
            return Response(0, reset_connection=True)
        return self._fault_response(rule, req, graph=True)

    def handle_identity(self, req: Request) -> Response:
        rule = self.faults.match(req.method, req.path)
        req.meta["fault"] = rule.id if rule else None
        if rule is not None and rule.kind == "reset":
            return Response(0, reset_connection=True)
        if rule is not None and rule.kind == "status":
            return self._fault_response(rule, req, graph=False)
        if rule is not None and rule.kind == "latency":
            time.sleep(rule.latency_ms / 1000.0)
        segs = req.segments
        low = [s.lower() for s in segs]
        try:
            if len(segs) >= 2:
                tenant, rest = segs[0], low[1:]
                if req.method == "GET" and rest in (
                    ["v2.0", ".well-known", "openid-configuration"],
                    [".well-known", "openid-configuration"],
                ):
                    return self.identity.discovery(tenant)
                if req.method == "POST" and rest == ["oauth2", "v2.0", "token"]:
                    resp = self.identity.token(tenant, req)
                    if resp.status == 200:
                        req.meta["app_id"] = req.form().get("client_id")
                    return resp
                if req.method == "GET" and rest == ["oauth2", "v2.0", "authorize"]:
                    return self.identity.authorize(tenant, req)
                if req.method == "GET" and rest == ["discovery", "v2.0", "keys"]:
                    return sign_in.jwks_response(self.oidc_key)
        except AadError as err:
            return aad_error_response(err, self.clock.now())
        return json_response(
            404,
            {"error": "not_found", "error_description": f"No route for {req.method} {req.path}"},
        )

    def _log(self, req: Request, resp: Response, started: float) -> None:
        if req.path.startswith("/_emulator"):
            return
        entry = {
            "monotonic": started,
            "wall": time.time(),
            "time": iso(datetime.now(UTC)),
            "method": req.method,
            "path": req.path,
            "query": req.query_string,
            "status": resp.status if not resp.reset_connection else "reset",
            "app_id": req.meta.get("app_id"),
            "mailbox": req.meta.get("mailbox"),
            "throttled": bool(req.meta.get("throttled")) or resp.status == 429,
            "retry_after": resp.headers.get("Retry-After"),
            "fault": req.meta.get("fault"),
            "batch_inner": req.is_batch_inner,
            "request_id": req.meta.get("request_id"),
            "client_request_id": req.meta.get("client_request_id"),
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        }
        with self._log_lock:
            self._log_seq += 1
            entry["seq"] = self._log_seq
            self.request_log.append(entry)
        log.debug("%s %s -> %s", req.method, req.path, entry["status"])

    def requests_since(self, since: int = 0) -> list[dict[str, Any]]:
        with self._log_lock:
            return [e for e in self.request_log if e["seq"] > since]


# --------------------------------------------------------------------------- socket layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GraphEmulator/1.0"
    sys_version = ""
    server: EmulatorHTTPServer
    _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's: send_header fills it

    # Headers and body go out in separate writes; without TCP_NODELAY each response waits
    # for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.request.settimeout(120)
        self._reset = False
        try:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            self._reset = True
        super().setup()

    def handle(self) -> None:
        if self._reset:
            return
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.debug("connection error: %s", exc)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the emulator's clock (advanced with POST /_emulator/clock),
        # so clients can be tested against a skewed identity platform.
        return email.utils.formatdate(self.server.app.clock.now().timestamp(), usegmt=True)

    def _serve(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(length)) if length else b""
        path, _, query = self.path.partition("?")
        req = Request(
            method=self.command,
            path=path,
            query_string=query,
            headers=Headers(list(self.headers.items())),
            body=body,
            peer=self.client_address[0],
        )
        resp = self.server.app.dispatch(req)
        if resp.reset_connection:
            self._do_reset()
            return
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        # Headers and body in one write: one TLS record and one system call, not two.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and resp.body:
            self._headers_buffer.append(resp.body)
        self.flush_headers()

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(65537).strip()
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _do_reset(self) -> None:
        self.close_connection = True
        try:
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if isinstance(raw, ssl.SSLSocket):
                sock = socket.socket(fileno=raw.detach())
                sock.close()
            else:
                raw.close()
        except OSError:
            pass

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: EmulatorApp, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error while serving %s", client_address)


# --------------------------------------------------------------------------- entry point


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger("graph_emulator")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def run(
    port: int = 8443,
    state_dir: str | os.PathLike[str] = ".graph-emulator",
    host: str = "127.0.0.1",
    demo: bool = False,
    control_token: str | None = None,
    config: dict[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
    redirect_uris: list[str] | None = None,
    log_level: str = "INFO",
    extra_users: int = 0,
    install_signal_handlers: bool = True,
    started: threading.Event | None = None,
    server_holder: list[EmulatorHTTPServer] | None = None,
    own_process: bool = False,
) -> int:
    """Run the emulator until SIGTERM / SIGINT (or ``server.shutdown()``). `own_process`:
    nothing else runs in this process (the command line), so its garbage collector is tuned
    for the emulator's heap."""
    setup_logging(log_level)
    sdir = Path(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = ensure_certs(sdir)
    app = EmulatorApp(
        sdir,
        control_token=control_token,
        config=config,
        seed=seed,
        demo=demo,
        redirect_uris=redirect_uris,
        extra_users=extra_users,
    )
    if own_process:
        # The seeded tenant lives as long as the process (a fleet-size one is over a million
        # objects): out of the collector's sight, and young collections less often, so that
        # a storm of new items does not pay a full collection every few thousand of them
        # (each stops every thread for a good part of a second).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    server = EmulatorHTTPServer((host, port), app, server_context(cert_path, key_path))
    public_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    app.set_base_url(f"https://{public_host}:{server.server_port}")
    info = app.tenant_info(ca_path)
    tmp = sdir / (DEMO_TENANT_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(sdir / DEMO_TENANT_FILE)
    app.start()
    if server_holder is not None:
        server_holder.append(server)

    if install_signal_handlers and threading.current_thread() is threading.main_thread():

        def _stop(signum: int, _frame: Any) -> None:
            log.info("received signal %s, shutting down", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    print(f"Graph emulator listening on {app.base_url}", flush=True)
    log.info(
        "tenant %s, client %s, state dir %s", info["tenant_id"], info["client_id"], sdir.resolve()
    )
    if started is not None:
        started.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        app.stop()
        server.server_close()
        log.info("graph emulator stopped")
    return 0
