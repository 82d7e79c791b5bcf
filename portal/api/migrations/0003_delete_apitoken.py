"""api.ApiToken's rows now live in access.BearerToken (copied by access 0011)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('api', '0002_idempotencyrecord'),
        ('access', '0011_bearer_tokens'),
    ]

    operations = [
        migrations.DeleteModel(
            name='ApiToken',
        ),
    ]
