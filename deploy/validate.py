#!/usr/bin/env python3
"""Validates the deployment files (run by `make test` through `make validate-deploy`).

- deploy/Dockerfile is clean under hadolint;
- deploy/k8s: the base and every overlay are rendered the way kustomize does for what they use
  (resources, strategic-merge patches by kind and name, images, namespace), and every rendered
  resource validates against the Kubernetes schemas shipped with kubernetes-validate (strict:
  unknown fields are errors); kinds from CRDs against deploy/k8s/schemas/;
- docker-compose.yml parses, and everything it names exists: services it depends on, the
  nginx upstreams and Prometheus targets, the binaries its commands run.
Exits non-zero naming every problem.
"""
import copy
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
problems = []
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): DEPLOY / "k8s/schemas/servicemonitor.schema.json"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def merge(base, patch):
    """Strategic merge as kustomize does it for these manifests: maps deep-merged, lists of
    maps with `name` merged by name, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            i = next((i for i, x in enumerate(out) if x["name"] == p["name"]), None)
            if i is None:
                out.append(copy.deepcopy(p))
            else:
                out[i] = merge(out[i], p)
        return out
    return copy.deepcopy(patch)


def render(kdir):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs = []
    for r in k.get("resources", []):
        p = (kdir / r).resolve()
        if p.is_dir():
            docs += render(p)
        elif p.is_file():
            docs += load_docs(p)
        else:
            problems.append(f"{kdir / 'kustomization.yaml'}: resource {r} does not exist")
    for patch in k.get("patches", []):
        for pd in load_docs(kdir / patch["path"]):
            key = (pd.get("kind"), pd.get("metadata", {}).get("name"))
            hits = [i for i, d in enumerate(docs) if (d.get("kind"), d.get("metadata", {}).get("name")) == key]
            if not hits:
                problems.append(f"{kdir / patch['path']}: patches {key}, which the base does not have")
            for i in hits:
                docs[i] = merge(docs[i], pd)
    for img in k.get("images", []):
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = c.get("image", "").partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    for pairs in k.get("labels", []):
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(pairs.get("pairs", {}))
    if "namespace" in k:
        for d in docs:
            if d.get("kind") not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    return docs


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
    print(f"docker-compose.yml: {len(services)} services checked")


def main():
    r = subprocess.run(["hadolint", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"hadolint deploy/Dockerfile:\n{r.stdout}{r.stderr}")
    else:
        print("deploy/Dockerfile: hadolint clean")
    validate_k8s("deploy/k8s/base", render(DEPLOY / "k8s/base"))
    for overlay in sorted((DEPLOY / "k8s/overlays").iterdir()):
        validate_k8s(f"deploy/k8s/overlays/{overlay.name}", render(overlay))
    check_compose()
    if problems:
        print("\n".join(["deployment files have problems:"] + problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
