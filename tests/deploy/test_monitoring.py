"""Checks of the alert rules, scrape configuration, prometheus-adapter rule and Grafana dashboard.

Every query is parsed by a PromQL parser (promql-parser) and may only read series the code registers
with prometheus_client (or the named external exporters); the rules are checked and unit-tested by
`promtool`; the Prometheus Operator objects are validated against the upstream CRD schemas vendored
in schemas/. Each validator is also shown to reject a planted breakage.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    ADAPTER_RULES,
    DASHBOARD,
    EXTERNAL_METRICS,
    K8S,
    OPERATIONS,
    PROM,
    RULE_TESTS,
    RULES,
    SCHEMAS,
    grafana_to_promql,
    metric_names,
    require_tool,
)

# The scrape labels a query may group or match by come with every series; the adapter's templates
# are filled in as prometheus-adapter would for a two-pod request.
ADAPTER_TEMPLATE = {"<<.GroupBy>>": "pod", "<<.LabelMatchers>>": 'namespace="voicenav",pod=~"a|b"'}


# --------------------------------------------------------------------------------------- helpers


def _rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["groups"]


def _alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in _rule_groups(path) for rule in group["rules"]]


def _dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of the dashboard (panel targets, template variables), by where it is."""
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} {target['refId']}"] = grafana_to_promql(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        # label_values(<series selector>, <label>) is Grafana's, the selector inside is PromQL.
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
        assert match, variable["name"]
        queries[f"variable {variable['name']}"] = grafana_to_promql(match.group(1))
    return queries


def _adapter_queries() -> dict[str, str]:
    queries = {}
    for i, rule in enumerate(yaml.safe_load(ADAPTER_RULES.read_text())["rules"]):
        queries[f"adapter rule {i} seriesQuery"] = rule["seriesQuery"]
        query = rule["metricsQuery"]
        for placeholder, value in ADAPTER_TEMPLATE.items():
            query = query.replace(placeholder, value)
        assert "<<" not in query, query
        queries[f"adapter rule {i} metricsQuery"] = query
    return queries


def _unknown_metrics(queries: dict[str, str], exported: frozenset[str]) -> dict[str, set[str]]:
    """Per query, the series it reads that neither the code nor the named exporters produce."""
    unknown = {}
    for where, expr in queries.items():
        names = metric_names(expr)
        assert names, f"{where} reads no series: {expr}"
        if missing := names - exported - EXTERNAL_METRICS:
            unknown[where] = missing
    return unknown


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "Debian package `prometheus`")
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def _crd_validator(kind: str) -> Any:
    """A JSON Schema validator of the vendored upstream CRD, strict as `kubectl apply --validate=strict`:
    objects with declared properties accept no others (unless the CRD preserves unknown fields). The
    OpenAPI v3 subset a CRD may use is read as JSON Schema draft 7."""
    jsonschema = pytest.importorskip("jsonschema")
    (path,) = [p for p in SCHEMAS.glob("*.yaml") if yaml.safe_load(p.read_text())["spec"]["names"]["kind"] == kind]
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: strict(v) for k, v in node.items()}
        # Go's RE2 takes inline flags anywhere ('^(?i)...'); Python's re only at the start.
        if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"]:
            out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
        if (
            out.get("type") == "object"
            and isinstance(out.get("properties"), dict)
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out

    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = _crd_validator(doc["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# ------------------------------------------------------------------------------------- metrics


def test_parser_reads_metric_names_from_the_syntax_tree() -> None:
    expr = (
        'sum by (namespace, le) (rate(voicenav_asr_latency_seconds_bucket{code=~"5..", x="a b"}[5m]))'
        ' / on (pod) group_left (node) up unless on (namespace, pod) (voicenav_draining == 1) or {__name__="z"}'
    )
    assert metric_names(expr) == {"voicenav_asr_latency_seconds_bucket", "up", "voicenav_draining", "z"}


def test_exported_series_come_from_the_code(exported_series: frozenset[str]) -> None:
    # Counters gain _total, histograms _bucket/_sum/_count: the names a query must use.
    assert {"voicenav_dialog_store_errors_total", "voicenav_hotwords_resync_errors_total"} <= exported_series
    assert "voicenav_asr_batch_size_count" in exported_series and "voicenav_asr_batch_size" not in exported_series
    assert "voicenav_redis_errors_total" not in exported_series


def test_alerts_read_only_exported_metrics(exported_series: frozenset[str]) -> None:
    queries = {rule["alert"]: rule["expr"] for rule in _alerts()}
    assert not _unknown_metrics(queries, exported_series)


def test_dashboard_reads_only_exported_metrics(exported_series: frozenset[str]) -> None:
    queries = _dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert not _unknown_metrics(queries, exported_series)


def test_adapter_rule_reads_only_exported_metrics(exported_series: frozenset[str]) -> None:
    assert not _unknown_metrics(_adapter_queries(), exported_series)


def test_metric_check_rejects_a_rule_on_a_metric_nobody_exports(
    tmp_path: Path, exported_series: frozenset[str]
) -> None:
    broken = copy.deepcopy(yaml.safe_load(RULES.read_text()))
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(voicenav_redis_errors_total[5m])) > 0"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump(broken))
    # promtool only checks syntax, so the rule passes there: the metric check is what catches it.
    assert _promtool("check", "rules", path).returncode == 0
    unknown = _unknown_metrics({r["alert"]: r["expr"] for r in _alerts(path)}, exported_series)
    assert unknown == {broken["groups"][0]["rules"][0]["alert"]: {"voicenav_redis_errors_total"}}


def test_validators_reject_a_rule_that_does_not_parse(tmp_path: Path) -> None:
    broken = copy.deepcopy(yaml.safe_load(RULES.read_text()))
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(voicenav_asr_rejected_total[5m]) > 0"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = _promtool("check", "rules", path)
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names(broken["groups"][0]["rules"][0]["expr"])


def test_validators_reject_broken_dashboard_queries(exported_series: frozenset[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    target = dashboard["panels"][0]["targets"][0]
    target["expr"] = 'sum(voicenav_redis_errors_total{namespace=~"$namespace"})'
    unknown = _unknown_metrics(_dashboard_queries(dashboard), exported_series)
    assert list(unknown.values()) == [{"voicenav_redis_errors_total"}]
    target["expr"] = 'sum by (pod (voicenav_active_calls{namespace=~"$namespace"})'
    with pytest.raises(ValueError, match="parenthesis"):
        _unknown_metrics(_dashboard_queries(dashboard), exported_series)


# -------------------------------------------------------------------------------------- alerting


def test_operator_rules_match_the_plain_rule_file() -> None:
    operator = yaml.safe_load((PROM / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == {"groups": _rule_groups()}


def test_alerts_cover_the_failure_modes() -> None:
    used: set[str] = set()
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        used |= metric_names(rule["expr"])
    required = {
        "voicenav_asr_latency_seconds_bucket",
        "voicenav_asr_queue_depth",
        "voicenav_asr_rejected_total",
        "voicenav_sip_responses_total",
        "voicenav_dialog_store_errors_total",
        "voicenav_hotwords_resync_errors_total",
        "voicenav_draining",
        "kube_deployment_status_replicas_available",
        "DCGM_FI_DEV_FB_USED",
    }
    assert required <= used, sorted(required - used)


def test_every_alert_has_a_runbook_entry() -> None:
    text = OPERATIONS.read_text()
    for rule in _alerts():
        assert f"`{rule['alert']}`" in text, f"{rule['alert']} missing from docs/operations.md"


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    proc = _promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The operator's copy as Prometheus would load it from the PrometheusRule.
    spec = tmp_path / "prometheusrule.rules.yaml"
    spec.write_text(yaml.safe_dump(yaml.safe_load((PROM / "prometheusrule.yaml").read_text())["spec"]))
    proc = _promtool("check", "rules", spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "deploy/prometheus/tests/*.yaml"
    tested: set[str] = set()
    for path in RULE_TESTS:
        proc = _promtool("test", "rules", path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    defined = {rule["alert"] for rule in _alerts()}
    assert tested == defined, f"alerts never shown to fire: {sorted(defined - tested)}"


def test_promtool_rule_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one expected label changed does."""
    source = next(p for p in RULE_TESTS if "VoicenavDialogStoreErrors" in p.read_text())
    # Same layout as deploy/prometheus: the test file names its rules as ../rules/<file>.
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(RULES.read_text())
    broken = tmp_path / "tests" / source.name
    assert "store: context" in source.read_text()
    broken.write_text(source.read_text().replace("store: context", "store: records"))
    proc = _promtool("test", "rules", broken)
    assert proc.returncode != 0 and "VoicenavDialogStoreErrors" in proc.stdout + proc.stderr


def test_adapter_counts_a_pod_without_calls_as_zero(tmp_path: Path) -> None:
    """voicenav_active_calls has no series before a pod's first call; the adapter query must still
    give that pod a value (0), or the HPA would average over the busy pods only."""
    (query,) = [q for where, q in _adapter_queries().items() if where.endswith("metricsQuery")]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'voicenav_draining{namespace="voicenav",pod="a"}', "values": "0x5"},
                    {"series": 'voicenav_draining{namespace="voicenav",pod="b"}', "values": "0x5"},
                    {
                        "series": 'voicenav_active_calls{namespace="voicenav",pod="a",transport="sip"}',
                        "values": "3x5",
                    },
                    {
                        "series": 'voicenav_active_calls{namespace="voicenav",pod="a",transport="webrtc"}',
                        "values": "1x5",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "2m",
                        "exp_samples": [{"labels": '{pod="a"}', "value": 4}, {"labels": '{pod="b"}', "value": 0}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "adapter.test.yaml"
    path.write_text(yaml.safe_dump(test))
    proc = _promtool("test", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule = yaml.safe_load(ADAPTER_RULES.read_text())["rules"][0]
    assert rule["name"]["as"] == "voicenav_active_calls"


# ---------------------------------------------------------------------- Prometheus Operator objects


def test_vendored_crds_are_the_upstream_files() -> None:
    kinds = set()
    for path in SCHEMAS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "monitoring.coreos.com"
        assert crd["metadata"]["annotations"]["operator.prometheus.io/version"]
        kinds.add(crd["spec"]["names"]["kind"])
    assert kinds == {"PodMonitor", "PrometheusRule"}


def test_operator_objects_match_their_crd_schemas(rendered_monitoring: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in rendered_monitoring) == ["PodMonitor", "PrometheusRule"]
    for doc in rendered_monitoring:
        assert not _crd_errors(doc), _crd_errors(doc)


def test_crd_schemas_reject_broken_objects(rendered_monitoring: list[dict[str, Any]]) -> None:
    monitor = copy.deepcopy(next(d for d in rendered_monitoring if d["kind"] == "PodMonitor"))
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint["prot"] = endpoint.pop("port")
    assert any("prot" in e for e in _crd_errors(monitor))
    rule = copy.deepcopy(next(d for d in rendered_monitoring if d["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert any("for" in e for e in _crd_errors(rule))


def test_scrape_targets_match_the_pods_and_alert_job(rendered: dict, rendered_monitoring: list) -> None:
    deployment = next(d for d in rendered["cpu"] if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (server,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "voicenav"]
    port_names = {p["name"] for p in server["ports"]}
    monitor = next(d for d in rendered_monitoring if d["kind"] == "PodMonitor")
    # kube-prometheus-stack selects PodMonitors and PrometheusRules by `release`.
    for doc in rendered_monitoring:
        assert doc["metadata"]["labels"]["release"], doc["kind"]
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert pod_labels["app.kubernetes.io/name"] == "voicenav"  # -> job="voicenav" in the alerts
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [deployment["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "internal" and "internal" in port_names
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/voicenav.rules.yaml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "voicenav"]
    keep = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keep == {"voicenav", "internal"}
    # Prometheus reaches the internal port through the NetworkPolicy from its namespace.
    peers = yaml.safe_load((K8S / "base" / "network-peers.yaml").read_text())["data"]
    policy = next(d for d in rendered["cpu"] if d["kind"] == "NetworkPolicy")["spec"]
    internal = next(p["containerPort"] for p in server["ports"] if p["name"] == "internal")
    (rule,) = [r for r in policy["ingress"] if {"protocol": "TCP", "port": internal} in r["ports"]]
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]]
    assert peers["monitoring-namespace"] in namespaces


# ------------------------------------------------------------------------------------- grafana


def test_dashboard_panels_all_query_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), panel["title"]


def test_dashboard_shows_what_the_alerts_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    shown = set().union(*(metric_names(q) for q in _dashboard_queries(dashboard).values()))
    alerted = set().union(*(metric_names(r["expr"]) for r in _alerts())) - EXTERNAL_METRICS
    assert alerted <= shown, f"alerted on but not on the dashboard: {sorted(alerted - shown)}"


def test_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area
