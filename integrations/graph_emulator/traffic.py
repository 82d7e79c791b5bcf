"""A burst of tenant traffic at a fixed rate (`POST /_emulator/traffic`): new mail and 1:1
chat messages for the given users, created inside the emulator so that the rate holds at
thousands per second (a client creating them one control call at a time could not). Every
item is recorded, so a benchmark can check that each one reached the portal."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from .messages import build_message, email_address
from .state import EmulatorState


class TrafficBurst(threading.Thread):
    """`rate` items a second for `seconds` seconds; `mail_share` of them mail, the rest chat
    messages in a chat of the user (its first), sent by that user."""

    TICK_S = 0.01  # the longest the thread sleeps while items are due within it
    MAX_HOLD = 100  # items created in one hold of the state lock (the Graph routes wait)

    def __init__(
        self,
        state: EmulatorState,
        users: list[str],
        *,
        rate: float,
        seconds: float,
        mail_share: float = 0.6,
        seed: int = 28,
    ) -> None:
        super().__init__(daemon=True, name="emulator-traffic")
        self.state = state
        self.users = users
        self.rate = rate
        self.seconds = seconds
        self.mail_share = mail_share
        self.rng = random.Random(seed)
        self.items: list[dict[str, Any]] = []
        self.started_wall = 0.0
        self.finished_wall = 0.0
        self.stopping = threading.Event()
        with state.lock:
            self.chat_of: dict[str, str] = {}
            for user_id in users:
                chats = state.chats_of(user_id)
                if chats:
                    self.chat_of[user_id] = chats[0].data["id"]

    def run(self) -> None:
        """Each item is created no earlier than its time (start + n / rate); the ones due
        are created together, in one hold of the state lock, every TICK_S or when the
        thread gets the CPU back: one lock round and one sleep per item would cost the
        emulator more than the item, at thousands a second."""
        self.started_wall = time.time()
        start = time.monotonic()
        total = int(self.rate * self.seconds)
        n = 0
        while n < total and not self.stopping.is_set():
            elapsed = time.monotonic() - start
            due = min(total, int(elapsed * self.rate) + 1)  # items 0 .. due-1 are due now
            if due <= n:
                time.sleep(max(n / self.rate - elapsed, self.TICK_S))
                continue
            count = min(due - n, self.MAX_HOLD)
            self._create(count)
            n += count
        self.finished_wall = time.time()

    def _create(self, count: int) -> None:
        st = self.state
        created: list[dict[str, Any]] = []
        with st.lock:
            for _ in range(count):
                user_id = self.rng.choice(self.users)
                chat_id = self.chat_of.get(user_id)
                if chat_id is None or self.rng.random() < self.mail_share:
                    created.append(self._mail(user_id))
                else:
                    created.append(self._chat(user_id, chat_id))
        at = time.time()
        for item in created:
            item["at"] = at
        self.items.extend(created)

    def _mail(self, user_id: str) -> dict[str, Any]:
        """Caller holds the state lock."""
        st = self.state
        user = st.users[user_id]
        msg = build_message(
            sender={"displayName": "Dispatch", "mail": f"dispatch@{st.domain}"},
            to=[email_address(user)],
            subject="Dispatch update",
            body={"contentType": "text", "content": "Load 4417 is ready at bay 3."},
            when=st.clock.now(),
            domain=st.domain,
        )
        st.put_message(user_id, st.mailboxes[user_id].wellknown["inbox"], msg)
        return {"kind": "mail", "id": msg["id"], "users": [user_id]}

    def _chat(self, user_id: str, chat_id: str) -> dict[str, Any]:
        """Caller holds the state lock."""
        st = self.state
        msg = st.chat_message(user_id, "On my way to the depot.", chat_id=chat_id)
        st.post_chat_message(chat_id, msg)
        return {
            "kind": "chat",
            "id": msg["id"],
            "chat_id": chat_id,
            "users": list(st.chats[chat_id].members),
        }

    def progress(self, since: int = 0) -> dict[str, Any]:
        items = self.items[since:]
        return {
            "running": self.is_alive(),
            "created": len(self.items),
            "planned": int(self.rate * self.seconds),
            "started": self.started_wall,
            "finished": self.finished_wall or None,
            "items": items,
        }
