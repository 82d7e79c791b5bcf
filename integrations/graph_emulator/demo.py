"""Demo-mode traffic generator: new mail and chat messages every few seconds."""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING

from .control import create_chat_message, create_mail
from .seed import random_chat_line, random_mail

if TYPE_CHECKING:  # pragma: no cover
    from .server import EmulatorApp

log = logging.getLogger("graph_emulator.demo")

MAX_PER_FOLDER = 500
MAX_PER_CHAT = 500


def generate_once(app: EmulatorApp, rng: random.Random) -> None:
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


def traffic_loop(app: EmulatorApp, stop: threading.Event) -> None:
    rng = random.Random()
    while not stop.wait(float(app.config.get("demo", "interval_s"))):
        try:
            generate_once(app, rng)
        except Exception:
            log.exception("demo traffic generation failed")
