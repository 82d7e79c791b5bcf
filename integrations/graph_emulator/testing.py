"""Run the emulator in a subprocess for tests (:class:`RunningEmulator`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from .outbound import LOCAL_RECEIVER_CONFIG

REPO_ROOT = Path(__file__).resolve().parents[2]


class ControlClient:
    """Thin client for the ``/_emulator`` control API."""

    def __init__(self, base_url: str, token: str, ca_path: str) -> None:
        self.base = base_url.rstrip("/") + "/_emulator"
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = ca_path
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(
        self, method: str, path: str, json_body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        resp = self.session.request(
            method, f"{self.base}/{path.lstrip('/')}", json=json_body, params=params, timeout=30
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"control API {method} {path} -> {resp.status_code}: {resp.text}")
        return resp.json() if resp.content else None

    # state / config
    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def tenant(self) -> dict[str, Any]:
        return self._call("GET", "tenant")

    def reset(self) -> None:
        self._call("POST", "reset")

    def configure(self, **sections: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "config", sections)

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def allow_local_receivers(self) -> dict[str, Any]:
        """Opt in to http and loopback notification URLs (a test's local receiver); Graph,
        and the emulator by default, refuses both."""
        return self.configure(**LOCAL_RECEIVER_CONFIG)

    def snapshot(self) -> dict[str, Any]:
        return self._call("GET", "snapshot")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "clock", {"advance_seconds": seconds})

    def set_service_account(self, upn: str) -> None:
        self._call("POST", "service-account", {"upn": upn})

    # faults
    def inject_fault(
        self, path: str = ".*", kind: str = "status", method: str = "*", **kw: Any
    ) -> dict[str, Any]:
        """``kind``: ``status`` (``status=503``, ``retry_after``), ``429``/``503``/``504``,
        ``latency`` (``latency_ms``), ``reset``; plus ``count`` / ``probability``; ``perform=True``
        carries the request out, then answers with the fault."""
        body = {"path": path, "kind": kind, "method": method, **kw}
        return self._call("POST", "faults", body)["faults"][0]

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    # logs
    def requests_log(
        self, since: int = 0, path: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if path:
            params["path"] = path
        if method:
            params["method"] = method
        return self._call("GET", "requests", params=params)["value"]

    def sent_messages(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if kind:
            params["kind"] = kind
        return self._call("GET", "sent", params=params)["value"]

    def deliveries(self, since: int = 0) -> dict[str, Any]:
        return self._call("GET", "deliveries", params={"since": since})

    # traffic
    def create_mail(
        self, to: str, subject: str = "Test", body: str = "Hello", **kw: Any
    ) -> dict[str, Any]:
        return self._call("POST", "mail", {"to": to, "subject": subject, "body": body, **kw})

    def update_mail(self, user: str, message_id: str, **changes: Any) -> None:
        self._call(
            "POST", "mail/update", {"user": user, "message_id": message_id, "changes": changes}
        )

    def delete_mail(self, user: str, message_id: str, hard: bool = False) -> None:
        self._call("POST", "mail/delete", {"user": user, "message_id": message_id, "hard": hard})

    def create_chat_message(self, body: str = "Hello", **kw: Any) -> dict[str, Any]:
        return self._call("POST", "chat-message", {"body": body, **kw})

    def delete_chat_message(self, chat_id: str, message_id: str) -> dict[str, Any]:
        """A user deletes a Teams message: Graph soft-deletes it (deletedDateTime set)."""
        return self._call(
            "POST", "chat-message/delete", {"chat_id": chat_id, "message_id": message_id}
        )

    def expire_delta_tokens(self, user: str | None = None) -> int:
        return self._call("POST", "delta/expire", {"user": user} if user else {})["expired"]

    # subscriptions
    def subscriptions(self) -> list[dict[str, Any]]:
        return self._call("GET", "subscriptions")["value"]

    def remove_subscription(self, subscription_id: str, *, notify: bool = True) -> dict[str, Any]:
        """Graph drops the subscription; `notify=False`: without a lifecycle event."""
        return self._call("POST", f"subscriptions/{subscription_id}/remove", {"notify": notify})

    def fire_lifecycle(
        self, subscription_id: str, event: str = "reauthorizationRequired"
    ) -> dict[str, Any]:
        return self._call("POST", "lifecycle", {"subscription_id": subscription_id, "event": event})

    # apps / secrets
    def apps(self) -> list[dict[str, Any]]:
        return self._call("GET", "apps")["value"]

    def create_app(self, roles: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        body = dict(kw)
        if roles is not None:
            body["roles"] = roles
        return self._call("POST", "apps", body)

    def set_roles(self, client_id: str, roles: list[str]) -> None:
        self._call("PUT", f"apps/{client_id}/roles", {"roles": roles})

    def set_protected_api(self, client_id: str, approved: bool) -> None:
        """Whether Microsoft approved the app's Teams protected-API (app-only chat reads)."""
        self._call("PUT", f"apps/{client_id}/protected-api", {"approved": approved})

    def set_redirect_uris(self, client_id: str, uris: list[str]) -> None:
        """The app registration's redirect URIs (matched exactly; none registered = none)."""
        self._call("PUT", f"apps/{client_id}/redirect-uris", {"redirect_uris": list(uris)})

    def add_secret(
        self,
        client_id: str,
        value: str | None = None,
        expires_in_seconds: float | None = None,
        expires_at: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if value:
            body["value"] = value
        if expires_in_seconds is not None:
            body["expires_in_seconds"] = expires_in_seconds
        if expires_at:
            body["expires_at"] = expires_at
        return self._call("POST", f"apps/{client_id}/secrets", body)

    def remove_secret(self, client_id: str, key_id: str) -> None:
        self._call("DELETE", f"apps/{client_id}/secrets/{key_id}")

    def expire_secret(self, client_id: str, key_id: str) -> None:
        self._call("POST", f"apps/{client_id}/secrets/{key_id}/expire")

    def secrets(self, client_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"apps/{client_id}/secrets")["value"]

    def add_certificate(self, client_id: str, certificate_pem: str) -> dict[str, Any]:
        """Upload a certificate (PEM) to the app; returns its thumbprint and dates."""
        return self._call(
            "POST", f"apps/{client_id}/certificates", {"certificate": certificate_pem}
        )

    def remove_certificate(self, client_id: str, thumbprint: str) -> None:
        self._call("DELETE", f"apps/{client_id}/certificates/{thumbprint}")

    def add_federated_credential(
        self,
        client_id: str,
        issuer: str,
        subject: str,
        *,
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
        audiences: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"issuer": issuer, "subject": subject}
        if jwks is not None:
            body["jwks"] = jwks
        if jwks_uri:
            body["jwksUri"] = jwks_uri
        if audiences:
            body["audiences"] = audiences
        return self._call("POST", f"apps/{client_id}/federated-credentials", body)

    def workload_token(
        self, subject: str, audience: str | None = None, lifetime_seconds: int | None = None
    ) -> dict[str, Any]:
        """A token from the emulator acting as the workload's issuer: token, issuer, jwksUri."""
        body: dict[str, Any] = {"subject": subject}
        if audience:
            body["audience"] = audience
        if lifetime_seconds:
            body["lifetime_seconds"] = lifetime_seconds
        return self._call("POST", "workload-identity/token", body)

    # staff sign-in (sign_in.py)
    def set_app_roles(self, upn: str, roles: list[str]) -> dict[str, Any]:
        return self._call("PUT", f"users/{upn}/app-roles", {"roles": roles})

    def set_amr(self, upn: str, amr: list[str]) -> dict[str, Any]:
        return self._call("PUT", f"users/{upn}/amr", {"amr": amr})

    def set_groups(self, upn: str, groups: list[str]) -> dict[str, Any]:
        return self._call("PUT", f"users/{upn}/groups", {"groups": groups})

    def set_account_enabled(self, upn: str, enabled: bool) -> dict[str, Any]:
        return self._call("PUT", f"users/{upn}/account-enabled", {"enabled": enabled})

    def tamper_next_id_token(self, mode: str | None) -> None:
        self._call("POST", "sign-in/tamper", {"mode": mode})


class RunningEmulator:
    """Start ``python -m integrations.graph_emulator`` in a subprocess.

    >>> with RunningEmulator() as emu:
    ...     emu.control.create_mail("maria.kowalski@fleetdemo.onmicrosoft.com")
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        config: dict[str, Any] | None = None,
        demo: bool = False,
        control_token: str | None = None,
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graph-emulator-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.port = port
        self.config = config
        self.demo = demo
        self.control_token_arg = control_token
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.control: ControlClient
        self._stdout_lines: list[str] = []

    # attributes from demo-tenant.json
    @property
    def base_url(self) -> str:
        return self.info["authority_host"]

    @property
    def authority_host(self) -> str:
        return self.info["authority_host"]

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_url(self) -> str:
        return self.info["graph_url"]

    @property
    def tenant_id(self) -> str:
        return self.info["tenant_id"]

    @property
    def client_id(self) -> str:
        return self.info["client_id"]

    @property
    def client_secret(self) -> str:
        return self.info["client_secret"]

    @property
    def ca_path(self) -> str:
        return self.info["ca_bundle"]

    @property
    def control_token(self) -> str:
        return self.info["control_token"]

    @property
    def service_account_upn(self) -> str:
        return self.info["service_account_upn"]

    def session(self) -> requests.Session:
        """A requests session that trusts the emulator CA and ignores env CA bundles."""
        s = requests.Session()
        s.trust_env = False
        s.verify = self.ca_path
        return s

    def start(self) -> RunningEmulator:
        cmd = [
            sys.executable,
            "-m",
            "integrations.graph_emulator",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            *self.extra_args,
        ]
        if self.config:
            cmd += ["--config", json.dumps(self.config)]
        if self.demo:
            cmd.append("--demo")
        if self.control_token_arg:
            cmd += ["--control-token", self.control_token_arg]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.state_dir / "emulator.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        ready = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._stdout_lines.append(line.rstrip("\n"))
                if line.startswith("Graph emulator listening on"):
                    ready.set()

        self._reader = threading.Thread(target=reader, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.state_dir / "emulator.log").read_text(errors="replace")
                raise RuntimeError(f"graph emulator failed to start:\n{log_text[-4000:]}")
        self.info = json.loads((self.state_dir / "demo-tenant.json").read_text())
        self.control = ControlClient(self.base_url, self.control_token, self.ca_path)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        # The process is gone, so its stdout reaches EOF and the reader ends; then the pipe is
        # closed (left open, it leaked a file per emulator: a ResourceWarning at some later gc).
        self._reader.join(timeout)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        self._stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def reset(self) -> None:
        self.control.reset()

    def token(self, client_id: str | None = None, client_secret: str | None = None) -> str:
        """Fetch an app-only Graph token with a plain POST (no MSAL)."""
        resp = self.session().post(
            f"{self.authority}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id or self.client_id,
                "client_secret": client_secret or self.client_secret,
                "scope": "https://graph.microsoft.com/.default",
            },
            timeout=30,
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def __enter__(self) -> RunningEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
