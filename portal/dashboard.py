"""What waits for an operator: each app registers a section provider for the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DashboardItem:
    title: str
    url: str
    detail: str = ""
    late: bool = False
    # What is late, said in words on the badge ("personalisation late since 2026-12-03").
    late_text: str = "late"


@dataclass
class DashboardSection:
    key: str
    title: str
    empty_text: str
    items: list[DashboardItem] = field(default_factory=list)


SectionProvider = Callable[[Any], DashboardSection | None]
_providers: list[tuple[int, SectionProvider]] = []


def register(order: int) -> Callable[[SectionProvider], SectionProvider]:
    """Register a provider returning a section for a user (or None when it does not apply)."""

    def decorator(provider: SectionProvider) -> SectionProvider:
        _providers.append((order, provider))
        _providers.sort(key=lambda pair: pair[0])
        return provider

    return decorator


def sections_for(user: Any) -> list[DashboardSection]:
    return [section for _, provider in _providers if (section := provider(user)) is not None]
