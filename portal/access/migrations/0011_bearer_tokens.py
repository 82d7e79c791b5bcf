"""People's API tokens (api.ApiToken) and service clients' tokens (access.ServiceClientToken)
become one table, access.BearerToken. Every token keeps working: the rows are copied with their
hash, public prefix, owner, scopes, expiry, last use and revocation, so a value issued before
authenticates (or stays refused) exactly as it did. People's tokens keep their ids, which audit
rows and the console's revoke URLs name; clients' tokens are named by their client and prefix,
so they take new ids after them. Reversible: the reverse copies every row back."""

from contextlib import contextmanager

import django.db.models.deletion
from django.conf import settings
from django.core.management.color import no_style
from django.db import migrations, models

COMMON = (
    "prefix",
    "token_hash",
    "created_at",
    "created_by",
    "expires_at",
    "last_used_at",
    "revoked_at",
)


@contextmanager
def keeping_created_at(*historical_models):
    """created_at is auto_now_add: without this, copying would stamp every row with now."""
    fields = [model._meta.get_field("created_at") for model in historical_models]
    for field in fields:
        field.auto_now_add = False
    try:
        yield
    finally:
        for field in fields:
            field.auto_now_add = True


def _reset_sequences(schema_editor, *historical_models):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), list(historical_models)):
            cursor.execute(sql)


def merge_tokens(apps, schema_editor):
    BearerToken = apps.get_model("access", "BearerToken")
    ApiToken = apps.get_model("api", "ApiToken")
    ServiceClientToken = apps.get_model("access", "ServiceClientToken")
    with keeping_created_at(BearerToken):
        BearerToken.objects.bulk_create(
            (
                BearerToken(
                    id=old.id,
                    user_id=old.user_id,
                    name=old.name,
                    scopes=old.scopes,
                    **{field: getattr(old, field) for field in COMMON},
                )
                for old in ApiToken.objects.order_by("id").iterator()
            ),
            batch_size=500,
        )
        _reset_sequences(schema_editor, BearerToken)
        BearerToken.objects.bulk_create(
            (
                BearerToken(
                    client_id=old.client_id,
                    scopes=[],
                    **{field: getattr(old, field) for field in COMMON},
                )
                for old in ServiceClientToken.objects.order_by("id").iterator()
            ),
            batch_size=500,
        )


def split_tokens(apps, schema_editor):
    BearerToken = apps.get_model("access", "BearerToken")
    ApiToken = apps.get_model("api", "ApiToken")
    ServiceClientToken = apps.get_model("access", "ServiceClientToken")
    with keeping_created_at(ApiToken, ServiceClientToken):
        ApiToken.objects.bulk_create(
            (
                ApiToken(
                    id=token.id,
                    user_id=token.user_id,
                    name=token.name or "API token",
                    scopes=token.scopes,
                    **{field: getattr(token, field) for field in COMMON},
                )
                for token in BearerToken.objects.filter(client__isnull=True).iterator()
            ),
            batch_size=500,
        )
        ServiceClientToken.objects.bulk_create(
            (
                ServiceClientToken(
                    id=token.id,
                    client_id=token.client_id,
                    **{field: getattr(token, field) for field in COMMON},
                )
                for token in BearerToken.objects.filter(client__isnull=False).iterator()
            ),
            batch_size=500,
        )
    _reset_sequences(schema_editor, ApiToken, ServiceClientToken)


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0010_manage_approvals_permission'),
        ('api', '0002_idempotencyrecord'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='BearerToken',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('name', models.CharField(blank=True, max_length=100)),
                ('prefix', models.CharField(db_index=True, max_length=16)),
                ('token_hash', models.CharField(max_length=64, unique=True)),
                ('scopes', models.JSONField(blank=True, default=list)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by', models.CharField(max_length=150)),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('client', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='tokens', to='access.serviceclient')),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API token',
                'ordering': ['-id'],
            },
        ),
        migrations.AddConstraint(
            model_name='bearertoken',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('client__isnull', True), ('user__isnull', False)), models.Q(('client__isnull', False), ('user__isnull', True)), _connector='OR'), name='access_bearertoken_one_owner'),
        ),
        migrations.RunPython(merge_tokens, split_tokens),
        migrations.DeleteModel(
            name='ServiceClientToken',
        ),
    ]
