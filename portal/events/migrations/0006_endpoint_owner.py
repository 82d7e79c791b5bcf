"""Event endpoints get an owner: the service client that created one through the API, else
the console (people made it). The create action's audit row says which kind of principal
made each existing endpoint; without one, a `created_by` naming a client (and no person)
decides."""

import django.db.models.deletion
from django.db import migrations, models


def assign_owners(apps, schema_editor):
    EventEndpoint = apps.get_model("events", "EventEndpoint")
    ServiceClient = apps.get_model("access", "ServiceClient")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    User = apps.get_model("auth", "User")
    clients = {client.pk: client for client in ServiceClient.objects.all()}
    by_name = {client.name: client for client in clients.values()}
    for endpoint in EventEndpoint.objects.filter(owner_client__isnull=True):
        created = (
            AuditEvent.objects.filter(
                action="event_endpoint.create",
                target_type="event_endpoint",
                target_id=str(endpoint.pk),
                outcome="success",
            )
            .values_list("actor_type", "actor_id")
            .first()
        )
        if created is not None:
            actor_type, actor_id = created
            is_client = actor_type == "client" and actor_id.isdigit()
            owner = clients.get(int(actor_id)) if is_client else None
        else:
            owner = by_name.get(endpoint.created_by)
            if owner is not None and User.objects.filter(username=endpoint.created_by).exists():
                owner = None  # a person of the same name: the console keeps it
        if owner is not None:
            EventEndpoint.objects.filter(pk=endpoint.pk).update(owner_client=owner)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0007_connect_tenant_permission"),
        ("audit", "0004_truncate_triggers"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("events", "0005_webhook_id_without_like_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="eventendpoint",
            name="owner_client",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="event_endpoints",
                to="access.serviceclient",
            ),
        ),
        migrations.RunPython(assign_owners, migrations.RunPython.noop),
    ]
