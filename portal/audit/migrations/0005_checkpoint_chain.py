"""Checkpoints chain: each new one signs its number and the previous checkpoint's id and MAC.

Existing checkpoints stay version 1 (unchained; their MACs are unchanged and still verify);
the first chained one links to the newest of them.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_truncate_triggers")]

    operations = [
        migrations.AddField(
            model_name="auditcheckpoint",
            name="version",
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="seq",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="prev_checkpoint_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="prev_mac",
            field=models.CharField(blank=True, default="", max_length=64),
            preserve_default=False,
        ),
    ]
