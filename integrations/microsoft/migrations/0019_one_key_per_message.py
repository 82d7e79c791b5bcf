"""One idempotency key per message.

Before, an API send had three: the client's Idempotency-Key (on the API's record), a key the
API minted from that record ("msg:api-<record id>", the message's) and the same again on the
job. Now the message's key is the client's, scoped to the principal ("api <owner> <key>"),
other callers' keys are kept as they gave them (without the "msg:" namespace the job needed),
and the job has none of its own.

Every existing key and record stays valid:
- the mail draft's tag moves to `graph_tag`, copied from the old key, so a message still in
  flight (or retried later) finds the draft or sent item it tagged;
- a message sent through the API takes its client's key from the record that names it, and
  the record still points at it: a replayed request with an old key returns that message;
- a caller's own key ("msg:approval-4-request") becomes the key as the caller gives it now
  ("approval-4-request"). (Keys the old code hashed, "msg:sha256:…", stay unmatchable as
  before for anyone but the record that names them; no caller of this portal used them.)
"""

from django.db import migrations, models

import integrations.microsoft.models.outbound
from django.db.models.functions import Substr

SEND_ENDPOINT = "POST /api/messages"


def one_key(apps, schema_editor):
    Message = apps.get_model("microsoft", "OutboundMessage")
    Record = apps.get_model("api", "IdempotencyRecord")
    Message.objects.update(graph_tag=models.F("idempotency_key"))
    records = Record.objects.filter(endpoint=SEND_ENDPOINT, resource_id__isnull=False)
    for record in records.iterator():
        Message.objects.filter(
            pk=record.resource_id, idempotency_key=f"msg:api-{record.pk}"
        ).update(idempotency_key=f"api {record.owner} {record.key}")
    # API keys have a space; none of these has one, so no new key meets another.
    Message.objects.filter(idempotency_key__startswith="msg:").update(
        idempotency_key=Substr("idempotency_key", 5)
    )


def keys_as_before(apps, schema_editor):
    Message = apps.get_model("microsoft", "OutboundMessage")
    Message.objects.update(idempotency_key=models.F("graph_tag"))


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0002_idempotencyrecord"),
        ("microsoft", "0018_tenant_chats"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboundmessage",
            name="graph_tag",
            field=models.CharField(default="", max_length=200),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="outboundmessage",
            name="idempotency_key",
            field=models.CharField(max_length=400, unique=True),
        ),
        migrations.RunPython(one_key, keys_as_before, elidable=False),
        migrations.AlterField(
            model_name="outboundmessage",
            name="graph_tag",
            field=models.CharField(
                default=integrations.microsoft.models.outbound.new_graph_tag,
                max_length=200,
                unique=True,
            ),
        ),
    ]
