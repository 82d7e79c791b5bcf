"""The demo tenant: fleet-operations users, mailboxes, chats and a team.

Deterministic for a given seed (ids, names, content); timestamps are relative
to the emulator clock at seeding time.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

from .messages import build_message, email_address
from .state import Channel, Chat, EmulatorState, Team, exchange_id

DEFAULT_SEED = 20240601

PEOPLE: list[tuple[str, str, str, str]] = [
    # given, surname, job title, department
    ("Maria", "Kowalski", "Fleet Manager", "Fleet Management"),
    ("Daniel", "Okafor", "Fleet Manager", "Fleet Management"),
    ("Hannah", "Lindqvist", "Dispatcher", "Dispatch"),
    ("Tomas", "Herrera", "Dispatcher", "Dispatch"),
    ("Priya", "Raman", "Senior Dispatcher", "Dispatch"),
    ("Lukas", "Brandt", "Dispatcher", "Dispatch"),
    ("Sofia", "Marchetti", "Driver", "Operations"),
    ("Jamal", "Carter", "Driver", "Operations"),
    ("Erik", "Johansson", "Driver", "Operations"),
    ("Aisha", "Bello", "Driver", "Operations"),
    ("Mateo", "Silva", "Driver", "Operations"),
    ("Grace", "O'Neill", "Driver", "Operations"),
    ("Viktor", "Novak", "Driver", "Operations"),
    ("Chloe", "Dubois", "Driver", "Operations"),
    ("Ravi", "Patel", "Lead Mechanic", "Maintenance"),
    ("Olga", "Petrova", "Mechanic", "Maintenance"),
    ("Samuel", "Mensah", "Mechanic", "Maintenance"),
    ("Yuki", "Tanaka", "Parts Coordinator", "Maintenance"),
    ("Fatima", "Haddad", "Safety Officer", "Compliance"),
    ("Noah", "Fischer", "Fuel & Telematics Analyst", "Fleet Management"),
    ("Isabel", "Romero", "Compliance Coordinator", "Compliance"),
    ("Kwame", "Asante", "Yard Supervisor", "Operations"),
]

DEPOTS = ["North Depot", "Harbour Yard", "East Logistics Park", "Airport Cargo Hub"]
VEHICLES = [f"{p}-{n:03d}" for p in ("TRK", "VAN", "RIG") for n in range(101, 121)]
ROUTES = [
    "R12 Harbour Loop",
    "R7 Airport Express",
    "R3 City Centre",
    "R21 Northern Ring",
    "R15 Industrial Park",
    "R9 Coastal Run",
]

MAIL_TEMPLATES: list[tuple[str, str]] = [
    (
        "Maintenance reminder: {vehicle} due for {service}",
        "Hi {to},\n\n{vehicle} is due for its {service} by {day}. Please book a slot at "
        "{depot}. Current odometer: {km} km.\n\nThanks,\n{sender}",
    ),
    (
        "Route change for {route} starting {day}",
        "Team,\n\nFrom {day} {route} will be diverted around the roadworks on Quay Street. "
        "Expect +{minutes} min per loop. Updated manifests are in the dispatch portal.\n\n{sender}",
    ),
    (
        "Weekly fuel report - {depot}",
        "Hello {to},\n\nFuel consumption for {depot} last week: {litres} L across "
        "{count} vehicles (avg {avg} L/100 km). {vehicle} is above the threshold, please check "
        "tyre pressure and idling.\n\nRegards,\n{sender}",
    ),
    (
        "Driver shift swap request: {day}",
        "Hi {to},\n\nCould I swap my {day} early shift on {route}? I've checked with the "
        "roster and {vehicle} is available.\n\nCheers,\n{sender}",
    ),
    (
        "Incident report {ref}: minor scrape on {vehicle}",
        "{to},\n\nMinor scrape on the rear bumper of {vehicle} while reversing at {depot}. "
        "No injuries, photos attached in the incident system under {ref}.\n\n{sender}",
    ),
    (
        "Parts delivery delayed - brake pads for {vehicle}",
        "Hi {to},\n\nThe supplier pushed the brake pad delivery to {day}. {vehicle} stays "
        "off the road until then; I've asked dispatch to reassign its runs.\n\n{sender}",
    ),
    (
        "Tachograph download overdue: {vehicle}",
        "Reminder: the tachograph data for {vehicle} has not been downloaded for 27 days. "
        "Please do it before {day} to stay compliant.\n\n{sender}",
    ),
    (
        "Tyre inspection results {depot}",
        "Inspection at {depot} done: {count} vehicles checked, {vehicle} needs two new "
        "drive-axle tyres. Work order {ref} raised.\n\n{sender}",
    ),
]

CHAT_LINES = [
    "Running about {minutes} min late on {route}, traffic at the bridge.",
    "{vehicle} is back from the workshop, ready for the afternoon run.",
    "Can someone cover the {day} night shift?",
    "Loading bay 3 at {depot} is blocked, use bay 5.",
    "Fuel card for {vehicle} declined again, can you check?",
    "Delivery at stop 14 done, customer signed.",
    "Heads up: {route} diversion starts tomorrow.",
    "Brake warning light on {vehicle}, heading to {depot}.",
    "Thanks, got the updated manifest.",
    "ETA to {depot} {minutes} minutes.",
]

SERVICES = [
    "A-service",
    "B-service",
    "annual MOT inspection",
    "brake check",
    "oil change",
    "tyre rotation",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _fill(rng: random.Random, template: str, **extra: str) -> str:
    values = {
        "vehicle": rng.choice(VEHICLES),
        "service": rng.choice(SERVICES),
        "day": rng.choice(DAYS),
        "depot": rng.choice(DEPOTS),
        "route": rng.choice(ROUTES),
        "km": f"{rng.randint(40, 420) * 1000:,}",
        "minutes": str(rng.choice([5, 10, 15, 20, 25])),
        "litres": f"{rng.randint(3000, 9000):,}",
        "count": str(rng.randint(8, 30)),
        "avg": f"{rng.uniform(24, 36):.1f}",
        "ref": f"INC-{rng.randint(10000, 99999)}",
    }
    values.update(extra)
    return template.format(**values)


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _idbytes(rng: random.Random, n: int = 45) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def random_mail(
    rng: random.Random, sender: dict[str, Any], recipient: dict[str, Any]
) -> tuple[str, str]:
    subject_t, body_t = rng.choice(MAIL_TEMPLATES)
    shared = {
        "vehicle": rng.choice(VEHICLES),
        "day": rng.choice(DAYS),
        "depot": rng.choice(DEPOTS),
        "route": rng.choice(ROUTES),
        "ref": f"WO-{rng.randint(10000, 99999)}",
    }
    subject = _fill(rng, subject_t, **shared)
    body = _fill(rng, body_t, to=recipient["givenName"], sender=sender["displayName"], **shared)
    return subject, body


def random_chat_line(rng: random.Random) -> str:
    return _fill(rng, rng.choice(CHAT_LINES))


def seed_tenant(
    state: EmulatorState, seed: int = DEFAULT_SEED, messages_per_user: int = 6
) -> dict[str, Any]:
    """Populate ``state`` with the demo tenant. Caller holds the lock."""
    rng = random.Random(seed)
    now = state.clock.now()
    domain = state.domain
    users: list[dict[str, Any]] = []
    for i, (given, surname, title, dept) in enumerate(PEOPLE):
        local = f"{given}.{surname}".lower().replace("'", "")
        users.append(
            state.add_user(
                {
                    "id": _guid(rng),
                    "businessPhones": [f"+44 20 7946 {1000 + i:04d}"],
                    "displayName": f"{given} {surname}",
                    "givenName": given,
                    "jobTitle": title,
                    "mail": f"{local}@{domain}",
                    "mobilePhone": f"+44 7700 9{rng.randint(10000, 99999)}",
                    "officeLocation": DEPOTS[i % len(DEPOTS)],
                    "preferredLanguage": "en-GB",
                    "surname": surname,
                    "userPrincipalName": f"{local}@{domain}",
                    "department": dept,
                    "accountEnabled": True,
                    "employeeId": f"FL{1000 + i}",
                    "companyName": "Fleet Demo Logistics",
                },
                rng,
            )
        )
    bot = state.add_user(
        {
            "id": _guid(rng),
            "businessPhones": [],
            "displayName": "Fleet Bot",
            "givenName": "Fleet",
            "jobTitle": "Service account",
            "mail": f"fleet.bot@{domain}",
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-GB",
            "surname": "Bot",
            "userPrincipalName": f"fleet.bot@{domain}",
            "department": "IT",
            "accountEnabled": True,
            "employeeId": None,
            "companyName": "Fleet Demo Logistics",
        },
        rng,
    )
    if state.service_account_upn is None:
        state.service_account_upn = bot["userPrincipalName"]

    # ---------------------------------------------------------------- mail
    for user in [*users, bot]:
        mb = state.mailboxes[user["id"]]
        for k in range(messages_per_user):
            sender = rng.choice([u for u in users if u["id"] != user["id"]])
            subject, text = random_mail(rng, sender, user)
            when = now - timedelta(days=rng.randint(0, 13), minutes=rng.randint(0, 1439))
            msg = build_message(
                sender=sender,
                to=[email_address(user)],
                subject=subject,
                body={"contentType": "text", "content": text},
                when=when,
                is_read=k % 3 == 0,
                domain=domain,
                msg_id=exchange_id("AAMkAG", _idbytes(rng)),
            )
            state.put_message(user["id"], mb.wellknown["inbox"], msg, notify=False)
        for _ in range(2):
            rcpt = rng.choice([u for u in users if u["id"] != user["id"]])
            subject, text = random_mail(rng, user, rcpt)
            when = now - timedelta(days=rng.randint(0, 13), minutes=rng.randint(0, 1439))
            msg = build_message(
                sender=user,
                to=[email_address(rcpt)],
                subject=subject,
                body={"contentType": "text", "content": text},
                when=when,
                is_read=True,
                domain=domain,
                msg_id=exchange_id("AAMkAG", _idbytes(rng)),
            )
            state.put_message(user["id"], mb.wellknown["sentitems"], msg, notify=False)
        subject, text = random_mail(rng, user, users[0])
        draft = build_message(
            sender=user,
            to=[email_address(users[0])],
            subject=subject,
            body={"contentType": "text", "content": text},
            when=now - timedelta(hours=rng.randint(1, 48)),
            is_read=True,
            is_draft=True,
            domain=domain,
            msg_id=exchange_id("AAMkAG", _idbytes(rng)),
        )
        state.put_message(user["id"], mb.wellknown["drafts"], draft, notify=False)

    # ---------------------------------------------------------------- chats
    def make_chat(chat_type: str, members: list[dict[str, Any]], topic: str | None) -> Chat:
        if chat_type == "oneOnOne":
            cid = f"19:{members[0]['id']}_{members[1]['id']}@unq.gbl.spaces"
        else:
            cid = f"19:{uuid.UUID(int=rng.getrandbits(128)).hex}@thread.v2"
        created = now - timedelta(days=rng.randint(20, 90))
        data = {
            "id": cid,
            "topic": topic,
            "createdDateTime": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "lastUpdatedDateTime": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "chatType": chat_type,
            "webUrl": f"https://teams.microsoft.com/l/chat/{cid}/0?tenantId={state.tenant_id}",
            "tenantId": state.tenant_id,
            "onlineMeetingInfo": None,
            "viewpoint": None,
        }
        chat = Chat(data=data, members=[m["id"] for m in members])
        state.add_chat(chat)
        n = rng.randint(3, 8)
        for j in range(n):
            sender = rng.choice(members)
            when = now - timedelta(hours=(n - j) * rng.randint(1, 6))
            msg = state.chat_message(sender["id"], random_chat_line(rng), chat_id=cid, created=when)
            state.post_chat_message(cid, msg, notify=False)
        return chat

    dispatchers = [u for u in users if "Dispatcher" in u["jobTitle"]]
    drivers = [u for u in users if u["jobTitle"] == "Driver"]
    mechanics = [
        u for u in users if "Mechanic" in u["jobTitle"] or u["jobTitle"] == "Parts Coordinator"
    ]
    managers = [u for u in users if u["jobTitle"] == "Fleet Manager"]
    for d in drivers:
        make_chat("oneOnOne", [rng.choice(dispatchers), d], None)
    make_chat("oneOnOne", [bot, managers[0]], None)
    make_chat("oneOnOne", [bot, dispatchers[0]], None)
    make_chat("group", dispatchers + managers + [bot], "Dispatch desk")
    make_chat("group", [*mechanics, managers[1], bot], "Workshop")
    make_chat("group", [dispatchers[1], *drivers[:4]], "Night shift")

    # ---------------------------------------------------------------- team
    team_id = _guid(rng)
    team = Team(
        data={
            "id": team_id,
            "createdDateTime": None,
            "displayName": "Fleet Operations",
            "description": "Day-to-day fleet operations",
            "internalId": f"19:{uuid.UUID(int=rng.getrandbits(128)).hex}@thread.tacv2",
            "classification": None,
            "specialization": None,
            "visibility": "private",
            "webUrl": f"https://teams.microsoft.com/l/team/fleet-ops?groupId={team_id}",
            "isArchived": False,
            "tenantId": state.tenant_id,
        },
        members=[u["id"] for u in [*users, bot]],
    )
    state.add_team(team)
    for name, desc in [
        ("General", "Announcements"),
        ("Dispatch", "Live dispatch coordination"),
        ("Maintenance", "Workshop schedule and parts"),
        ("Safety", "Incidents and compliance"),
    ]:
        chid = f"19:{uuid.UUID(int=rng.getrandbits(128)).hex}@thread.tacv2"
        team.channels[chid] = Channel(
            data={
                "id": chid,
                "createdDateTime": None,
                "displayName": name,
                "description": desc,
                "isFavoriteByDefault": None,
                "email": "",
                "tenantId": state.tenant_id,
                "webUrl": f"https://teams.microsoft.com/l/channel/{chid}/{name}?groupId={team_id}",
                "membershipType": "standard",
            }
        )
        for j in range(rng.randint(2, 5)):
            sender = rng.choice(users)
            when = now - timedelta(hours=(6 - j) * 5)
            msg = state.chat_message(
                sender["id"], random_chat_line(rng), team_id=team_id, channel_id=chid, created=when
            )
            state.post_channel_message(team_id, chid, msg, notify=False)
    return {"users": len(users) + 1, "team_id": team_id, "service_account": bot["id"]}


def seed_extra_users(state: EmulatorState, count: int, seed: int = DEFAULT_SEED) -> None:
    """Add `count` drivers beside the demo's people, lean enough for a tenant of 10,000 and
    more in a few hundred MB: each with a mailbox holding one inbox message, and a 1:1 chat
    with the next one (pairs) holding one message. UPNs are `driver00001@…`. Caller holds
    the lock."""
    rng = random.Random(seed + 1)
    now = state.clock.now()
    domain = state.domain
    dispatcher = next(iter(state.users.values()))
    added: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        local = f"driver{n:05d}"
        user = state.add_user(
            {
                "id": _guid(rng),
                "businessPhones": [],
                "displayName": f"Driver {n:05d}",
                "givenName": "Driver",
                "jobTitle": "Driver",
                "mail": f"{local}@{domain}",
                "mobilePhone": None,
                "officeLocation": DEPOTS[n % len(DEPOTS)],
                "preferredLanguage": "en-GB",
                "surname": f"{n:05d}",
                "userPrincipalName": f"{local}@{domain}",
                "department": "Operations",
                "accountEnabled": True,
                "employeeId": f"FX{n:05d}",
                "companyName": "Fleet Demo Logistics",
            }
        )
        mailbox = state.mailboxes[user["id"]]
        subject, text = random_mail(rng, dispatcher, user)
        msg = build_message(
            sender=dispatcher,
            to=[email_address(user)],
            subject=subject,
            body={"contentType": "text", "content": text},
            when=now - timedelta(days=rng.randint(0, 13)),
            domain=domain,
        )
        state.put_message(user["id"], mailbox.wellknown["inbox"], msg, notify=False)
        added.append(user)
    for first, second in zip(added[::2], added[1::2], strict=False):
        cid = f"19:{first['id']}_{second['id']}@unq.gbl.spaces"
        created = (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        state.add_chat(
            Chat(
                data={
                    "id": cid,
                    "topic": None,
                    "createdDateTime": created,
                    "lastUpdatedDateTime": created,
                    "chatType": "oneOnOne",
                    "webUrl": f"https://teams.microsoft.com/l/chat/{cid}/0?tenantId={state.tenant_id}",
                    "tenantId": state.tenant_id,
                    "onlineMeetingInfo": None,
                    "viewpoint": None,
                },
                members=[first["id"], second["id"]],
            )
        )
        line = state.chat_message(
            first["id"], random_chat_line(rng), chat_id=cid, created=now - timedelta(hours=2)
        )
        state.post_chat_message(cid, line, notify=False)
