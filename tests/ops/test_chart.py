"""The Helm chart: `helm lint --strict`, `helm template` with the default, production and
development-extras values, every manifest validated by `kubernetes-validate --strict`
against a current Kubernetes, and the structural promises of issue 5 checked on the
rendered objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.conftest import CHART, ROOT, RULES, run

KUBERNETES_VERSION = "1.37.0"
PRODUCTION = CHART / "values-production.yaml"
DEV_EXTRAS = Path(__file__).with_name("values-dev-redis.yaml")
VALUE_SETS = {"default": None, "production": PRODUCTION, "dev-extras": DEV_EXTRAS}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # no schema ships for these


def render(helm: str, values: Path | None) -> str:
    cmd = [helm, "template", "nb", str(CHART), "--namespace", "nextbest"]
    if values is not None:
        cmd += ["-f", str(values)]
    result = run(cmd)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def objects(manifest: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def of_kind(objs: dict[tuple[str, str], dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objs.items() if k == kind]


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, str]:
    return {name: render(helm, values) for name, values in VALUE_SETS.items()}


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_lint_strict(helm: str, values: str) -> None:
    cmd = [helm, "lint", "--strict", str(CHART)]
    if VALUE_SETS[values] is not None:
        cmd += ["-f", str(VALUE_SETS[values])]
    result = run(cmd)
    assert result.returncode == 0, f"helm lint --strict ({values}) failed:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_manifests_validate_strict(
    rendered: dict[str, str], kubernetes_validate: str, tmp_path: Path, values: str
) -> None:
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(rendered[values])
    result = run([kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                  str(manifest)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate --strict ({values}) failed:\n{output}"
    assert "ERROR" not in output, output
    # Every built-in kind was validated; only the prometheus-operator CRDs lack schemas.
    for kind, name in objects(rendered[values]):
        if kind not in CRD_KINDS:
            assert f"passed for resource {kind.lower()}/{name} " in output, (kind, name, output)


def service_container(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    deployment = objs[("Deployment", "nb-nextbest")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_pods_are_locked_down(rendered: dict[str, str], values: str) -> None:
    objs = objects(rendered[values])
    pods = [o["spec"]["template"]["spec"] for o in of_kind(objs, "Deployment")]
    pods += [o["spec"]["jobTemplate"]["spec"]["template"]["spec"] for o in of_kind(objs, "CronJob")]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "limits" in container["resources"] and "requests" in container["resources"]


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_service_container(rendered: dict[str, str], values: str) -> None:
    objs = objects(rendered[values])
    pod = objs[("Deployment", "nb-nextbest")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    c = service_container(objs)
    mode = "serve" if values == "production" else "demo"
    # One uvicorn worker per pod: no --workers, one core at most.
    assert c["args"] == [mode, "--host", "0.0.0.0", "--port", "8000"]
    assert str(c["resources"]["limits"]["cpu"]) == "1"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts and "/var/lib/nextbest" in mounts  # writable spots only
    env = {e["name"]: e for e in c["env"]}
    assert env["NEXTBEST_DATA_DIR"]["value"] == "/var/lib/nextbest/data"
    assert env["NEXTBEST_MODELS_DIR"]["value"] == "/var/lib/nextbest/models"
    service = objs[("Service", "nb-nextbest")]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_production_wiring(rendered: dict[str, str]) -> None:
    objs = objects(rendered["production"])
    c = service_container(objs)
    env = {e["name"]: e for e in c["env"]}
    assert env["NEXTBEST_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "nextbest-redis", "key": "redis-url"}
    # Keys as a mounted key file, reloaded by the service when the Secret changes.
    assert "NEXTBEST_API_KEYS" not in env
    assert env["NEXTBEST_API_KEYS_FILE"]["value"] == "/etc/nextbest/api-keys/keys.yaml"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "api-keys"]
    assert mount == {"name": "api-keys", "mountPath": "/etc/nextbest/api-keys", "readOnly": True}
    pod = objs[("Deployment", "nb-nextbest")]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "nextbest-api-keys"
    assert volume["secret"]["items"] == [{"key": "keys.yaml", "path": "keys.yaml"}]
    settings = objs[("ConfigMap", "nb-nextbest-settings")]["data"]
    assert settings["NEXTBEST_ENV"] == "production"
    assert settings["NEXTBEST_REDIS_CLUSTER"] == "true"
    assert not of_kind(objs, "Secret")  # existing secrets only: nothing sensitive in values
    assert "replicas" not in objs[("Deployment", "nb-nextbest")]["spec"]  # the HPA owns it
    hpa = objs[("HorizontalPodAutoscaler", "nb-nextbest")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "nb-nextbest"
    assert objs[("PodDisruptionBudget", "nb-nextbest")]["spec"]["minAvailable"] == 2
    jobs = {o["metadata"]["name"]: o for o in of_kind(objs, "CronJob")}
    train = jobs["nb-nextbest-train"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    materialize = jobs["nb-nextbest-materialize"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert train["containers"][0]["args"][:2] == ["retrain", "--no-progress"]
    assert materialize["containers"][0]["args"] == ["materialize", "--incremental"]
    for pod in (train, materialize):
        assert all(v["name"] != "api-keys" for v in pod["volumes"])  # jobs serve no requests
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == ["nb-nextbest-data"]
    policy = objs[("NetworkPolicy", "nb-nextbest")]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert {"port": 6379, "protocol": "TCP"} in [p for rule in policy["egress"] for p in rule["ports"]]


def test_the_train_cronjob_runs_the_retraining_pipeline(
        helm: str, kubernetes_validate: str, rendered: dict[str, str], tmp_path: Path) -> None:
    """export -> dataset -> train -> gate -> register (-> promote with `promote`), one run
    at a time, on the shared volume and the service's Redis, and a Job whose failure
    policy follows `nextbest retrain`'s exit codes."""
    from training.retrain import EXIT_CODES, EXPORT_FAILED, OK

    train = ("CronJob", "nb-nextbest-train")
    cron = objects(rendered["production"])[train]
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["args"] == ["retrain", "--no-progress", "--attribution-window", "24h", "--margin",
                                 "0", "--log-loss-margin", "0", "--min-ess", "100"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert container["resources"]["limits"]["memory"] == "4Gi"
    env = {e["name"]: e for e in container["env"]}
    assert env["NEXTBEST_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "nextbest-redis"
    assert env["NEXTBEST_MODELS_DIR"]["value"] == "/var/lib/nextbest/models"
    fail_job, ignore = job["podFailurePolicy"]["rules"]
    assert fail_job["action"] == "FailJob" and fail_job["onExitCodes"]["containerName"] == "train"
    assert fail_job["onExitCodes"]["values"] == sorted(set(EXIT_CODES) - {OK, EXPORT_FAILED})
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}

    promoting = render_with(helm, PRODUCTION, "cronjobs.train.promote=true")
    (container,) = objects(promoting)[train]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "retrain" and container["args"][-1] == "--promote"
    manifest = tmp_path / "promoting.yaml"
    manifest.write_text(promoting)
    result = run([kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(manifest)])
    assert result.returncode == 0 and "passed for resource cronjob/nb-nextbest-train " in result.stdout, (
        result.stdout + result.stderr)

    enabled = ["cronjobs.train.enabled=true", "persistence.enabled=true"]
    no_redis = run([helm, "template", "nb", str(CHART), *(a for v in enabled for a in ("--set", v))])
    assert no_redis.returncode != 0 and "reads the service's decision and feedback streams" in no_redis.stderr
    allow = run([helm, "template", "nb", str(CHART), "-f", str(PRODUCTION),
                 "--set", "cronjobs.concurrencyPolicy=Allow"])
    assert allow.returncode != 0 and "must be Forbid" in allow.stderr


def render_with(helm: str, values: Path, *overrides: str) -> str:
    cmd = [helm, "template", "nb", str(CHART), "--namespace", "nextbest", "-f", str(values)]
    for override in overrides:
        cmd += ["--set", override]
    result = run(cmd)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def test_monitoring_objects(rendered: dict[str, str], promtool: str, tmp_path: Path) -> None:
    objs = objects(rendered["production"])
    monitor = objs[("ServiceMonitor", "nb-nextbest")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    service_labels = objs[("Service", "nb-nextbest")]["metadata"]["labels"]
    assert selector.items() <= service_labels.items()

    rule = objs[("PrometheusRule", "nb-nextbest")]
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "PrometheusRule must be files/rules.yaml verbatim"
    # The rules exactly as the cluster will get them pass promtool too.
    extracted = tmp_path / "from-chart.yaml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = run([promtool, "check", "rules", str(extracted)])
    assert result.returncode == 0, result.stdout + result.stderr

    dashboard_cm = objs[("ConfigMap", "nb-nextbest-dashboard")]
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_cm["metadata"]["annotations"]["grafana_folder"] == "nextbest"
    (payload,) = dashboard_cm["data"].values()
    dashboard = json.loads(payload)
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for needle in ("nextbest_stage_duration_seconds_bucket", "nextbest_http_request_duration_seconds",
                   "nextbest_degraded_decisions_total", "nextbest_degraded_responses_total",
                   'outcome="accept"', "by (channel)",
                   "by (journey_stage)", "nextbest_learner_lag_seconds_bucket",
                   "nextbest_feedback_backlog", "nextbest_event_loop_lag_seconds_bucket",
                   "nextbest_group_decisions_total", "by (group)", "nextbest_touchpoint_events_total",
                   "by (channel, journey_stage)", 'outcome="dismiss"'):
        assert needle in exprs, needle


def test_dev_extras(rendered: dict[str, str]) -> None:
    objs = objects(rendered["dev-extras"])
    redis = objs[("Deployment", "nb-nextbest-redis")]
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert ("Service", "nb-nextbest-redis") in objs
    env = {e["name"]: e for e in service_container(objs)["env"]}
    assert env["NEXTBEST_REDIS_URL"]["value"] == "redis://nb-nextbest-redis:6379/0"
    assert env["NEXTBEST_CATALOG_PATH"]["value"] == "/etc/nextbest/catalog/catalog.json"
    catalog = json.loads(objs[("ConfigMap", "nb-nextbest-catalog")]["data"]["catalog.json"])
    assert catalog["actions"][0]["action_id"] == "p001"
    secret = objs[("Secret", "nb-nextbest-api-keys")]
    assert secret["stringData"]["api-keys"] == "dev-key-1,dev-key-2"
    assert env["NEXTBEST_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "nb-nextbest-api-keys", "key": "api-keys"}
    assert "NEXTBEST_API_KEYS_FILE" not in env


def test_default_install_is_self_contained(rendered: dict[str, str]) -> None:
    objs = objects(rendered["default"])
    env = {e["name"] for e in service_container(objs)["env"]}
    assert "NEXTBEST_REDIS_URL" not in env  # embedded state, no Redis to provide
    assert not of_kind(objs, "CronJob") and not of_kind(objs, "Secret")
    assert ("PodDisruptionBudget", "nb-nextbest") in objs
    assert ("NetworkPolicy", "nb-nextbest") in objs


def test_misconfiguration_is_refused(helm: str) -> None:
    result = run([helm, "template", "nb", str(CHART), "--set", "cronjobs.train.enabled=true"])
    assert result.returncode != 0 and "persistence.enabled" in result.stderr
    result = run([helm, "template", "nb", str(CHART), "--set", "settings.redis_url=redis://x"])
    assert result.returncode != 0 and "own section" in result.stderr
    result = run([helm, "template", "nb", str(CHART), "--set", "apiKeys.mountAsFile=true"])
    assert result.returncode != 0 and "apiKeys.existingSecret" in result.stderr


def test_dockerfile_matches_chart() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert 'ENTRYPOINT ["nextbest"]' in dockerfile
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile
    assert dockerfile.count("FROM ") >= 2  # multi-stage
    assert (ROOT / ".dockerignore").is_file()


def test_values_document_every_key() -> None:
    """Every key of values.yaml down to the third level carries a `# --` comment, sits
    inside a commented key (a Kubernetes object documented as a whole), or is a section
    whose children all do: the lines a reader scans in `helm show values`."""
    import re

    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, int, str, bool]] = []  # (line, indent, key, documented)
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not m or len(m.group(1)) > 4:
            continue
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1  # continuation lines of a multi-line comment
        keys.append((i, len(m.group(1)), m.group(2), j >= 0 and lines[j].strip().startswith("# --")))

    def documented(k: int) -> bool:
        _, indent, _, doc = keys[k]
        if doc:
            return True
        children = []
        for later in keys[k + 1:]:
            if later[1] <= indent:
                break
            if later[1] == indent + 2:
                children.append(keys.index(later))
        return bool(children) and all(documented(c) for c in children)

    def ancestor_documented(k: int) -> bool:
        indent = keys[k][1]
        for earlier in reversed(keys[:k]):
            if earlier[1] < indent:
                if earlier[3]:
                    return True
                indent = earlier[1]
        return False

    missing = [keys[k][2] for k in range(len(keys)) if not (documented(k) or ancestor_documented(k))]
    assert not missing, f"undocumented values.yaml keys: {missing}"


def test_chart_follows_the_one_version_source() -> None:
    import service

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == service.__version__, "bump helm/nextbest/Chart.yaml `version`"
    assert chart["appVersion"] == service.__version__, "bump helm/nextbest/Chart.yaml `appVersion`"
    for values in (CHART / "values.yaml", PRODUCTION):
        assert yaml.safe_load(values.read_text())["image"]["tag"] == "", \
            f"{values.name} pins image.tag: leave it empty so the image follows appVersion"
