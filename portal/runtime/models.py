from django.db import models


class RuntimeSetting(models.Model):
    """An operator-changed value; settings without a row use their default."""

    key = models.CharField(max_length=64, primary_key=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150)

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}"
