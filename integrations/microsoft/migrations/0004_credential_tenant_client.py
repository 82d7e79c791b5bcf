from django.conf import settings
from django.db import migrations, models


def stamp_existing(apps, schema_editor):
    # Secrets stored before this migration were added for the configuration in force when
    # the portal was upgraded: the best record of their tenant and client there is.
    Credential = apps.get_model("microsoft", "Credential")
    Credential.objects.filter(tenant_id="").update(
        tenant_id=getattr(settings, "MICROSOFT_TENANT_ID", "") or "",
        client_id=getattr(settings, "MICROSOFT_CLIENT_ID", "") or "",
    )


class Migration(migrations.Migration):

    dependencies = [
        ("microsoft", "0003_outbound_messages"),
    ]

    operations = [
        migrations.AddField(
            model_name="credential",
            name="tenant_id",
            field=models.CharField(blank=True, editable=False, max_length=100),
        ),
        migrations.AddField(
            model_name="credential",
            name="client_id",
            field=models.CharField(blank=True, editable=False, max_length=100),
        ),
        migrations.RunPython(stamp_existing, migrations.RunPython.noop),
    ]
