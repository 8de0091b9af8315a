"""The Prometheus recording rules and SLO alerts (helm/nextbest/files/rules.yaml, the one
source of the chart's PrometheusRule): `promtool check rules` and `promtool test rules`
with synthetic series (tests/ops/rules_test.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ops.conftest import RULES, run

RULES_TEST = Path(__file__).with_name("rules_test.yaml")
ALERTS = {
    "NextbestDecisionLatencyHigh", "NextbestDecisionErrorRateHigh", "NextbestDegradedResponsesHigh",
    "NextbestLearnerLagHigh", "NextbestFeedbackBacklogHigh", "NextbestNotReady",
    "NextbestActionFeaturesStale", "NextbestSnapshotsNotWritten", "NextbestExportBehind",
    "NextbestExportLostEvents", "NextbestModelLoadFailed", "NextbestModelVersionsDiverge",
    "NextbestStateBackendDown", "NextbestOnlineStoreEmpty",
}


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    quiet = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if not a.get("exp_alerts")}
    assert firing == ALERTS, ALERTS - firing
    assert quiet == ALERTS, ALERTS - quiet
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
