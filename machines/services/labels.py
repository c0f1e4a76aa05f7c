from __future__ import annotations

from machines.models import Label


def labels_get_or_create(names: list[str] | tuple[str, ...]) -> list[Label]:
    """The labels with these names, made if new; blank names are ignored."""
    return [Label.objects.get_or_create(name=name.strip())[0] for name in names if name.strip()]
