"""Microsoft's own Python SDK (msgraph-sdk, Kiota) against the emulator, without adaptation.

The SDK is configured the way its documentation configures it for a national cloud: an
azure-identity ClientSecretCredential whose authority is the emulator's identity host (the
SDK's token provider is azure-identity, so it is exercised too), an httpx client whose base
URL is the emulator's Graph URL and which trusts the emulator's CA, and the emulator's host
in the auth provider's allowed hosts (else Kiota sends no Authorization header at all). Every
request goes through the SDK's default middleware (retry, redirect, telemetry, URL replace).

Each answer is parsed by the SDK's models and written back with Kiota's JSON serialisation
writer; every non-null field of the emulator's JSON must come back with the same value (as a
typed property or in additional_data): nothing the emulator says is lost or misread.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import warnings
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)
from msgraph.graph_request_adapter import options as sdk_default_options
from msgraph_core import GraphClientFactory

from integrations.graph_emulator.testing import RunningEmulator

from .conftest import BOT, HANNAH, MARIA, Receiver

Scenario = Callable[[GraphServiceClient, list[httpx.Response]], Awaitable[None]]


# msgraph-sdk / azure-identity leave async transports and their sockets unclosed (closing
# the httpx client and the credential is not enough): ignored here only, and collected at the
# end of each test so the warnings cannot surface in a later test, where they are errors.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_the_sdks_leftovers() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def run_sdk(emulator: RunningEmulator, scenario: Scenario) -> list[httpx.Response]:
    """Run `scenario` with an SDK client pointed at the emulator; returns every HTTP answer
    the SDK received (bodies read), so tests can compare what was parsed with what was sent."""
    seen: list[httpx.Response] = []

    async def main() -> None:
        credential = ClientSecretCredential(
            emulator.tenant_id,
            emulator.client_id,
            emulator.client_secret,
            authority=emulator.authority_host,
            # Instance discovery asks login.microsoftonline.com whether the authority is a
            # known cloud; the emulator is not one (as for any sovereign or private cloud).
            disable_instance_discovery=True,
            connection_verify=emulator.ca_path,
        )

        async def keep(response: httpx.Response) -> None:
            await response.aread()
            seen.append(response)

        http = httpx.AsyncClient(
            base_url=emulator.graph_url,
            verify=ssl.create_default_context(cafile=emulator.ca_path),
            trust_env=False,  # the machine's CA environment variables would win over verify
            event_hooks={"response": [keep]},
            timeout=30,
        )
        auth = AzureIdentityAuthenticationProvider(
            credential,
            scopes=["https://graph.microsoft.com/.default"],
            allowed_hosts=[urlsplit(emulator.graph_url).hostname or ""],
        )
        client = GraphClientFactory.create_with_default_middleware(
            client=http, options=sdk_default_options
        )
        try:
            await scenario(
                GraphServiceClient(request_adapter=GraphRequestAdapter(auth, client)), seen
            )
        finally:
            await http.aclose()
            await credential.close()

    # Its own thread and event loop: Playwright's sync API (browser tests earlier in the same
    # session) leaves a loop running in the main thread, where asyncio.run() is refused.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(main())).result()
    return seen


def written_back(parsed: Any) -> dict[str, Any]:
    writer = JsonSerializationWriter()
    writer.write_object_value(None, parsed)
    return json.loads(writer.get_serialized_content())


def _as_time(value: str) -> datetime | None:
    if len(value) < 19 or value[4] != "-" or "T" not in value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def assert_lossless(raw: Any, back: Any, where: str = "$") -> None:
    """Every non-null value of `raw` (the emulator's JSON) is in `back` (the SDK's)."""
    if isinstance(raw, dict):
        assert isinstance(back, dict), f"{where}: {back!r} is not an object"
        for key, value in raw.items():
            if value is None:
                continue
            assert key in back, f"{where}.{key} was lost by the SDK (had {value!r})"
            assert_lossless(value, back[key], f"{where}.{key}")
    elif isinstance(raw, list):
        assert isinstance(back, list) and len(back) == len(raw), f"{where}: {back!r}"
        for i, (a, b) in enumerate(zip(raw, back, strict=True)):
            assert_lossless(a, b, f"{where}[{i}]")
    elif isinstance(raw, str) and _as_time(raw) is not None:
        assert isinstance(back, str) and _as_time(back) == _as_time(raw), f"{where}: {back!r}"
    elif isinstance(raw, str) and isinstance(back, str) and raw.lower() != raw:
        # Kiota writes enum members in their declared (camelCase) spelling.
        assert back == raw or back.lower() == raw.lower(), f"{where}: {back!r} != {raw!r}"
    else:
        assert back == raw, f"{where}: {back!r} != {raw!r}"


def last_json(seen: list[httpx.Response], path_part: str) -> dict[str, Any]:
    response = next(r for r in reversed(seen) if path_part in r.request.url.path)
    return response.json()


def check(parsed: Any, seen: list[httpx.Response], path_part: str) -> None:
    assert parsed is not None
    assert_lossless(last_json(seen, path_part), written_back(parsed))


def test_users_list_and_get(emulator):
    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        users = await graph.users.get()
        check(users, seen, "/users")
        assert MARIA in {u.user_principal_name for u in users.value}
        maria = await graph.users.by_user_id(MARIA).get()
        check(maria, seen, f"/users/{MARIA}")
        assert maria.display_name == "Maria Kowalski" and maria.id

    seen = run_sdk(emulator, scenario)
    assert [r.status_code for r in seen] == [200, 200]
    # The emulator's host is in the auth provider's allowed hosts: a bearer token was sent.
    assert all(r.request.headers["Authorization"].startswith("Bearer ") for r in seen)


def test_an_error_is_an_odata_error_with_code_message_and_request_id(emulator):
    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        with pytest.raises(ODataError) as caught:
            await graph.users.by_user_id("nobody@fleetdemo.onmicrosoft.com").get()
        error = caught.value
        assert error.response_status_code == 404
        raw = last_json(seen, "/users/nobody")
        assert error.error.code == raw["error"]["code"] == "Request_ResourceNotFound"
        assert error.error.message == raw["error"]["message"]
        inner = raw["error"]["innerError"]
        assert error.error.inner_error.request_id == inner["request-id"]
        assert error.error.inner_error.client_request_id == inner["client-request-id"]
        assert_lossless(raw, written_back(error))

    run_sdk(emulator, scenario)


def test_mail_delta_rounds_and_a_replayed_delta_link(emulator):
    new_subject = "SDK delta: TRK-311 inspection"

    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        inbox = graph.users.by_user_id(HANNAH).mail_folders.by_mail_folder_id("inbox")
        page = await inbox.messages.delta.get()
        ids: list[str] = []
        while True:
            check(page, seen, "/delta")
            ids += [m.id for m in page.value]
            assert not (page.odata_next_link and page.odata_delta_link)
            if page.odata_delta_link:
                break
            page = await inbox.messages.delta.with_url(page.odata_next_link).get()
        assert ids and len(ids) == len(set(ids))
        delta_link = page.odata_delta_link

        new = emulator.control.create_mail(HANNAH, subject=new_subject, body="Friday 9:00")
        changes = await inbox.messages.delta.with_url(delta_link).get()
        check(changes, seen, "/delta")
        assert [m.subject for m in changes.value] == [new_subject]
        assert changes.value[0].id == new["id"] and changes.odata_delta_link
        # The same deltaLink again (a crashed client's retry): the same change, replayed.
        replay = await inbox.messages.delta.with_url(delta_link).get()
        check(replay, seen, "/delta")
        assert [m.id for m in replay.value] == [new["id"]]

    run_sdk(emulator, scenario)


def test_send_mail(emulator):
    subject = "SDK sendMail: brake test booked"

    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        body = SendMailPostRequestBody(
            message=Message(
                subject=subject,
                body=ItemBody(content_type=BodyType.Text, content="Tuesday, bay 3."),
                to_recipients=[Recipient(email_address=EmailAddress(address=HANNAH))],
            ),
            save_to_sent_items=True,
        )
        assert await graph.users.by_user_id(MARIA).send_mail.post(body) is None
        assert seen[-1].status_code == 202 and seen[-1].content == b""

    run_sdk(emulator, scenario)
    sent = [m for m in emulator.control.sent_messages(kind="mail") if m["subject"] == subject]
    assert len(sent) == 1 and sent[0]["to"] == [HANNAH] and sent[0]["sent_item_id"]


def test_subscriptions_create_renew_list_delete(emulator):
    emulator.control.allow_local_receivers()  # a loopback http receiver
    receiver = Receiver()

    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        expires = datetime.now(UTC) + timedelta(hours=2)
        created = await graph.subscriptions.post(
            Subscription(
                change_type="created,updated",
                notification_url=receiver.url,
                lifecycle_notification_url=receiver.lifecycle_url,
                resource=f"users/{MARIA}/mailFolders('inbox')/messages",
                expiration_date_time=expires,
                client_state="sdk-state",
            )
        )
        check(created, seen, "/subscriptions")
        assert created.id and created.client_state == "sdk-state"
        assert abs(created.expiration_date_time - expires) < timedelta(seconds=1)

        later = expires + timedelta(hours=10)
        renewed = await graph.subscriptions.by_subscription_id(created.id).patch(
            Subscription(expiration_date_time=later)
        )
        check(renewed, seen, f"/subscriptions/{created.id}")
        assert abs(renewed.expiration_date_time - later) < timedelta(seconds=1)

        listed = await graph.subscriptions.get()
        check(listed, seen, "/subscriptions")
        mine = [s for s in listed.value if s.id == created.id]
        assert len(mine) == 1 and mine[0].client_state is None  # Graph hides it in lists

        assert await graph.subscriptions.by_subscription_id(created.id).delete() is None
        assert seen[-1].status_code == 204
        after = await graph.subscriptions.get()
        assert created.id not in {s.id for s in after.value}

    try:
        run_sdk(emulator, scenario)
    finally:
        receiver.close()
    # Graph validated both URLs before creating the subscription.
    assert sorted(v["path"].split("?")[0] for v in receiver.validations) == [
        "/lifecycle",
        "/notify",
    ]


def test_chat_messages_delta(emulator):
    tenant = emulator.control.tenant()
    bot = next(u for u in tenant["users"] if u["userPrincipalName"] == BOT)
    chat = next(c for c in tenant["chats"] if bot["id"] in c["members"])

    async def scenario(graph: GraphServiceClient, seen: list[httpx.Response]) -> None:
        messages = graph.chats.by_chat_id(chat["id"]).messages
        page = await messages.delta.get()
        seen_ids: list[str] = []
        while True:
            check(page, seen, "/delta")
            seen_ids += [m.id for m in page.value]
            if page.odata_delta_link:
                break
            page = await messages.delta.with_url(page.odata_next_link).get()
        assert seen_ids
        posted = emulator.control.create_chat_message(
            "SDK delta: route R4 reopened", chat_id=chat["id"], **{"from": BOT}
        )
        changes = await messages.delta.with_url(page.odata_delta_link).get()
        check(changes, seen, "/delta")
        assert [m.id for m in changes.value] == [posted["id"]]
        message = changes.value[0]
        assert message.chat_id == chat["id"] and message.from_.user.id == bot["id"]
        assert "route R4 reopened" in message.body.content

        # A user deletes it: Teams soft-deletes (deletedDateTime set), and the SDK reads that.
        emulator.control.delete_chat_message(chat["id"], posted["id"])
        gone = await messages.delta.with_url(changes.odata_delta_link).get()
        check(gone, seen, "/delta")
        assert [m.id for m in gone.value] == [posted["id"]]
        assert gone.value[0].deleted_date_time is not None

        # The documented v1.0 delta over all of a user's chats (what the portal syncs) has no
        # generated builder; the SDK's delta builder follows any delta URL (with_url).
        url = f"{emulator.graph_url}/users/{bot['id']}/chats/getAllMessages/delta"
        page = await messages.delta.with_url(url).get()
        check(page, seen, "getAllMessages")
        assert all(m.odata_type == "#microsoft.graph.chatMessage" for m in page.value)

    run_sdk(emulator, scenario)
