"""Page numbers for the runs list that stay cheap on a long history.

DRF's ``PageNumberPagination`` runs an exact ``COUNT(*)`` on every request: over 100,000 runs
that is 15 to 35 ms, more than the page itself. Here the page is read with one row more than
it shows (so "is there a next page" needs no count), the count is exact when the page is the
last one or when at most ``EXACT_COUNT_LIMIT`` rows match (a count that stops there), and
above that it is PostgreSQL's planner estimate. The response says which: ``count_is_estimate``.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

EXACT_COUNT_LIMIT = 1000
MAX_OFFSET = 2**63 - 1  # PostgreSQL's OFFSET and LIMIT are bigints


def count_rows(queryset: QuerySet[Any], *, at_least: int = 0) -> tuple[int, bool]:
    """How many rows ``queryset`` has, and whether that figure is an estimate.

    Exact up to ``EXACT_COUNT_LIMIT``; above it PostgreSQL's estimate for the same query (its
    statistics, as of the last ANALYZE), never below ``at_least`` rows known to exist. Other
    databases always count exactly.
    """
    unordered = queryset.order_by()
    bounded = unordered.values("pk")[: EXACT_COUNT_LIMIT + 1].count()
    if bounded <= EXACT_COUNT_LIMIT:
        return bounded, False
    if connections[queryset.db].vendor != "postgresql":
        return unordered.count(), False
    plan = json.loads(unordered.values("pk").explain(format="json"))
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    return max(estimate, at_least, EXACT_COUNT_LIMIT + 1), True


def stable_order(queryset: QuerySet[Any, Any]) -> QuerySet[Any, Any]:
    """The queryset's order with the primary key last, newest first, as a tie-breaker: pages
    are OFFSETs, and in an order that leaves ties (``?ordering=status``) PostgreSQL may return
    tied rows in a different order for each page, so that a row shows on two pages and
    another on none."""
    ordering = list(queryset.query.order_by)
    if not ordering:
        # TestRun's Meta.ordering already ends in -id.
        return queryset if queryset.ordered else queryset.order_by("-pk")
    if any(str(o).lstrip("-") in ("pk", "id") for o in ordering):
        return queryset
    return queryset.order_by(*ordering, "-pk")


class RunPagination(PageNumberPagination):
    """``?page=N`` (from 1) and ``?page_size=`` (at most 100); ``count`` with
    ``count_is_estimate``. A page past the end is a 404, as with DRF's own."""

    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any] | None:
        size = self.get_page_size(request)
        if not size:
            return None
        self.request = request
        self.url = request.build_absolute_uri()
        raw = request.query_params.get(self.page_query_param, "1")
        try:
            number = int(raw)
        except ValueError:
            number = 0
        if number < 1:
            raise NotFound(self.invalid_page_message.format(page_number=raw, message="not a page"))
        offset = (number - 1) * size
        if offset + size + 1 > MAX_OFFSET:  # past any table, and past what SQL's OFFSET takes
            raise NotFound(
                self.invalid_page_message.format(page_number=raw, message="past the last page")
            )
        queryset = stable_order(queryset)
        rows = list(queryset[offset : offset + size + 1])
        self.has_next = len(rows) > size
        rows = rows[:size]
        if not rows and number > 1:
            raise NotFound(
                self.invalid_page_message.format(page_number=raw, message="past the last page")
            )
        self.number = number
        if self.has_next:
            self.count, self.count_is_estimate = count_rows(
                queryset, at_least=offset + len(rows) + 1
            )
        else:
            self.count, self.count_is_estimate = offset + len(rows), False
        return rows

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        return replace_query_param(self.url, self.page_query_param, self.number + 1)

    def get_previous_link(self) -> str | None:
        if self.number <= 1:
            return None
        if self.number == 2:
            return remove_query_param(self.url, self.page_query_param)
        return replace_query_param(self.url, self.page_query_param, self.number - 1)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "count": self.count,
                "count_is_estimate": self.count_is_estimate,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paged = super().get_paginated_response_schema(schema)
        paged["required"] = ["count", "count_is_estimate", "results"]
        paged["properties"] = {
            "count": {
                "type": "integer",
                "example": 123,
                "description": "Runs matching; PostgreSQL's estimate when count_is_estimate.",
            },
            "count_is_estimate": {
                "type": "boolean",
                "description": f"True when more than {EXACT_COUNT_LIMIT} runs match and the "
                "count is the database's estimate rather than an exact count.",
            },
            **{k: v for k, v in paged["properties"].items() if k != "count"},
        }
        return paged
