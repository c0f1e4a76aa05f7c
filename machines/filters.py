import django_filters

from machines.models import AuditEntry, Board, Machine, Venv


class MachineFilter(django_filters.FilterSet):
    label = django_filters.CharFilter(field_name="labels__name", distinct=True)

    class Meta:
        model = Machine
        fields = ["status", "os", "enabled", "maintenance", "label"]


class BoardFilter(django_filters.FilterSet):
    label = django_filters.CharFilter(field_name="labels__name", distinct=True)
    leased = django_filters.BooleanFilter(method="filter_leased")

    class Meta:
        model = Board
        fields = ["machine", "status", "locked", "label", "leased"]

    def filter_leased(self, queryset, name, value):
        return queryset.exclude(lease_holder="") if value else queryset.filter(lease_holder="")


class VenvFilter(django_filters.FilterSet):
    class Meta:
        model = Venv
        fields = ["machine", "state"]


class AuditFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["target_type", "target_id", "action", "source", "since", "until"]
