"""Key the chain: rows so far are marked as the legacy unkeyed SHA-256 chain; checkpoints.

The column is added with a default, so existing rows get `sha256-legacy` without an UPDATE
(which the append-only trigger would refuse) and keep verifying with their original hash.
With AUDIT_CHAIN_KEY set (required outside DEBUG), the legacy chain is verified and pinned by
a first signed checkpoint: from then on legacy rows are accepted only up to it.
"""

from django.db import migrations, models


def pin_legacy_chain(apps, schema_editor):
    from portal.audit.chain import configured_keys, walk
    from portal.audit.verification import new_checkpoint

    keys = configured_keys()
    event_model = apps.get_model("audit", "AuditEvent")
    checkpoint_model = apps.get_model("audit", "AuditCheckpoint")
    if not keys or not event_model.objects.exists():
        return
    result = walk(event_model.objects.order_by("id").iterator(chunk_size=5000))
    if result.problem is not None:
        return  # already broken: verify_audit_chain will say where; nothing to vouch for
    new_checkpoint(checkpoint_model, keys[0], result.last_id, result.last_hash,
                   result.checked, "migration 0003 (legacy chain pinned)").save()


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="key_id",
            field=models.CharField(default="sha256-legacy", max_length=32),
            preserve_default=False,
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField()),
                ("event_id", models.BigIntegerField(blank=True, null=True)),
                ("event_hash", models.CharField(max_length=64)),
                ("event_count", models.PositiveBigIntegerField()),
                ("source", models.CharField(blank=True, max_length=64)),
                ("key_id", models.CharField(max_length=32)),
                ("mac", models.CharField(max_length=64)),
            ],
            options={"ordering": ["-id"]},
        ),
        migrations.RunPython(pin_legacy_chain, migrations.RunPython.noop),
    ]
