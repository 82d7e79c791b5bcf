from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_job_status_id_index")]

    operations = [
        migrations.RenameField("bulkoperationitem", "job_id", "target_id"),
        migrations.AddField("bulkoperationitem", "error",
                            models.TextField(blank=True, default=""), preserve_default=False),
        migrations.AlterField(
            "bulkoperationitem", "result",
            models.CharField(choices=[("waiting", "Waiting"), ("done", "Done"),
                                      ("skipped", "Skipped"), ("failed", "Failed")],
                             default="waiting", max_length=16)),
        migrations.AddField("bulkoperation", "failed", models.PositiveIntegerField(default=0)),
    ]
