"""Admin helpers for tables with millions of rows."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet


class EstimatedCountPaginator(Paginator):
    """Uses PostgreSQL's planner estimate for unfiltered tables instead of COUNT(*)."""

    @cached_property
    def count(self) -> int:
        # Only a queryset (what the admin's changelist pages) names a table to estimate.
        rows = self.object_list
        if (
            connection.vendor == "postgresql"
            and isinstance(rows, QuerySet)
            and not rows.query.where
        ):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                    [rows.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > 10_000:
                return int(row[0])
        return super().count


class BigTableAdminMixin:
    paginator: type[Paginator] = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50


class ReadOnlyAdminMixin:
    """For worker-owned state: people look, services change."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
