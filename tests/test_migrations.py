"""Every model change has its migration: a change without one would reach production as a
schema (or permission) that the code expects but the database never gets."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_its_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as missing:
        pytest.fail(
            f"makemigrations would write new migrations ({missing.code}):\n{out.getvalue()}"
        )
