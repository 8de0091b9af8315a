"""Feedback timestamps: a zone-less timestamp means UTC, whatever the server's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from service.feedback import _epoch


def test_naive_timestamp_is_utc() -> None:
    assert _epoch(datetime(2024, 5, 1, 12, 0, 0)) == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()


def test_aware_timestamp_keeps_its_zone() -> None:
    cet = timezone(timedelta(hours=1))
    assert _epoch(datetime(2024, 5, 1, 13, 0, 0, tzinfo=cet)) == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
