import django_filters

from test_runner.models import TestCase, TestRun


class CaseFilter(django_filters.FilterSet):
    label = django_filters.CharFilter(field_name="labels__name", distinct=True)

    class Meta:
        model = TestCase
        fields = ["kind", "label", "archived", "needs_board"]


class RunFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="requested_by__username")
    machine = django_filters.CharFilter(field_name="machine__name")
    case = django_filters.CharFilter(field_name="case__name")
    label = django_filters.CharFilter(field_name="requested_label")
    queued_after = django_filters.IsoDateTimeFilter(field_name="queued_at", lookup_expr="gte")
    queued_before = django_filters.IsoDateTimeFilter(field_name="queued_at", lookup_expr="lt")
    mine = django_filters.BooleanFilter(method="filter_mine")

    class Meta:
        model = TestRun
        fields = ["status", "outcome", "source", "user", "machine", "case", "label"]

    def filter_mine(self, queryset, name, value):
        if value and self.request is not None:
            return queryset.filter(requested_by=self.request.user)
        return queryset
