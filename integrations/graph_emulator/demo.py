"""Demo mode: new mail and chat messages every few seconds, and a workload identity token file
kept fresh (as Kubernetes projects one) for the portal's workload identity credential."""

from __future__ import annotations

import logging
import os
import random
import threading
import uuid
from pathlib import Path

from .control import create_chat_message, create_mail
from .host import EmulatorHost
from .seed import random_chat_line, random_mail
from .state import DEFAULT_FEDERATED_AUDIENCE, FederatedCredential

log = logging.getLogger("graph_emulator.demo")

MAX_PER_FOLDER = 500
MAX_PER_CHAT = 500
# What AKS projects for the service account of deploy/overlays/workload-identity.
WORKLOAD_SUBJECT = "system:serviceaccount:fleet-management:fleet-portal"
WORKLOAD_TOKEN_LIFETIME = 3600
WORKLOAD_REFRESH_SECONDS = 600


def write_workload_token(app: EmulatorHost, path: Path) -> None:
    """Trust the emulator's workload issuer on the demo app (again after a reset) and write a
    fresh token to `path`, replacing it atomically as the kubelet does."""
    identity = app.identity
    with app.state.lock:
        demo_app = app.state.apps.get(app.ident["client_id"])
        if demo_app is not None and not any(
            f.subject == WORKLOAD_SUBJECT for f in demo_app.federated_credentials
        ):
            demo_app.federated_credentials.append(
                FederatedCredential(
                    id=str(uuid.uuid4()),
                    name="demo workload identity",
                    issuer=identity.workload_issuer(),
                    subject=WORKLOAD_SUBJECT,
                    jwks_uri=identity.jwks_uri(),
                )
            )
    token = identity.workload_token(
        WORKLOAD_SUBJECT, DEFAULT_FEDERATED_AUDIENCE, WORKLOAD_TOKEN_LIFETIME
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def workload_token_loop(app: EmulatorHost, path: Path, stop: threading.Event) -> None:
    while True:
        try:
            write_workload_token(app, path)
        except Exception:
            log.exception("writing the workload identity token failed")
        if stop.wait(WORKLOAD_REFRESH_SECONDS):
            return


def generate_once(app: EmulatorHost, rng: random.Random) -> None:
    st = app.state
    with st.lock:
        users = [u for u in st.users.values()]
        chats = list(st.chats.values())
        sa = st.service_account_upn
    if rng.random() < 0.6:
        rcpt = rng.choice(users)
        if sa and rng.random() < 0.3:
            rcpt = next(u for u in users if u["userPrincipalName"] == sa)
        sender = rng.choice([u for u in users if u["id"] != rcpt["id"]])
        subject, body = random_mail(rng, sender, rcpt)
        out = create_mail(
            app, {"to": rcpt["id"], "from": sender["id"], "subject": subject, "body": body}
        )
        with st.lock:
            st.trim_folder(rcpt["id"], out["folder_id"], MAX_PER_FOLDER)
        log.info("demo mail to %s: %s", rcpt["userPrincipalName"], subject)
    else:
        chat = rng.choice(chats)
        sender_id = rng.choice(chat.members)
        out = create_chat_message(
            app, {"chat_id": chat.data["id"], "from": sender_id, "body": random_chat_line(rng)}
        )
        with st.lock:
            st.trim_chat(chat.data["id"], MAX_PER_CHAT)
        log.info("demo chat message in %s", chat.data.get("topic") or chat.data["id"][:24])


def traffic_loop(app: EmulatorHost, stop: threading.Event) -> None:
    rng = random.Random()
    while not stop.wait(float(app.config.get("demo", "interval_s"))):
        try:
            generate_once(app, rng)
        except Exception:
            log.exception("demo traffic generation failed")
