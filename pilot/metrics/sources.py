"""Gauge sources for components that keep their own counts (read at collection, never on their hot path)."""

from __future__ import annotations

from typing import Protocol


class WebhookCounts(Protocol):
    """What pilot.webhook.WebhookServer counts, by istiod's label values."""

    passed: dict[tuple[str, str, str], int]
    failed: dict[tuple[str, str, str, str], int]
    http_errors: dict[int, int]


def webhook_values(webhook: WebhookCounts | None) -> dict[str, dict[tuple[str, ...], float]]:
    """istiod's galley_validation_* counters from the webhook's counts (nothing when it does not run)."""
    if webhook is None:
        return {}
    return {
        "galley_validation_passed": dict(webhook.passed),
        "galley_validation_failed": dict(webhook.failed),
        "galley_validation_http_error": {(str(status),): n for status, n in webhook.http_errors.items()},
    }
