#!/usr/bin/env python3
"""Writes objects.json: the objects the CEL corpus is judged on (tests/tests/real_cel.rs and the
crate's corpus test). Deterministic: `python3 gen_objects.py > objects.json`.

Namespaces: cel-a (env=prod), cel-b (env=dev); cluster-scoped objects have none."""

import json
import random

rnd = random.Random(19)
NS = ["cel-a", "cel-b"]
out = []

IMAGES = [
    "registry.example.com/app:1.2.3",
    "registry.example.com/app:latest",
    "registry.example.com/app",
    "ghcr.io/codex-k8s/api:v2",
    "ghcr.io/codex-k8s/api@sha256:" + "a" * 64,
    "docker.io/library/nginx:1.27",
    "nginx",
    "quay.io/team/tool:0.9",
    "gcr.io/kaniko-project/executor:v1.23.0",
]
REFS_OK = ["main", "feature/x", "refs/tags/v1.2.3", "a1b2c3d", "release-1.0", "user@feature"]
REFS_BAD = ["-b feature/x", "--orphan", "feature x", "a..b", "x.lock", "/main", "main.", "@", "a:b", ""]
CACHE = ["false", "true", "TRUE", " yes ", "0", "on", "off"]
OWNERS = ["alice_at_example.com", "Bob.example", "carol_at_corp.example", None]


def pick(xs):
    return rnd.choice(xs)


def labels(i, workload=True):
    ls = {}
    if workload and rnd.random() < 0.8:
        ls["app.kubernetes.io/name"] = f"app{i}"
    if rnd.random() < 0.7:
        ls["team"] = pick(["a", "b", "Ops"])
    if rnd.random() < 0.15:
        ls["codexk8s.io/managed-by"] = "ck8s"
    if rnd.random() < 0.1:
        ls["codex-k8s.dev/managed-by"] = "ck8s"
    if rnd.random() < 0.12:
        ls["protected"] = "true"
    o = pick(OWNERS)
    if o and rnd.random() < 0.4:
        ls["owner"] = o
    return ls


def container(i, n):
    c = {"name": f"c{n}", "image": pick(IMAGES)}
    r = rnd.random()
    if r < 0.5:
        lim = {"cpu": pick(["100m", "1", "2"]), "memory": pick(["128Mi", "1Gi", "2Gi", "3Gi", "2048Mi", "4G"])}
        if rnd.random() < 0.2:
            del lim["cpu"]
        c["resources"] = {"limits": lim}
        if rnd.random() < 0.5:
            # never above the limit: the API server refuses that
            c["resources"]["requests"] = {"memory": pick(["64Mi", lim["memory"]])}
    if rnd.random() < 0.2:
        # privileged: true is refused by this API server (--allow-privileged=false)
        c["securityContext"] = pick([{"privileged": False}, {"capabilities": {"add": ["NET_ADMIN"]}},
                                     {"capabilities": {"add": ["CHOWN"]}}, {"capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}])
    elif rnd.random() < 0.2:
        c["securityContext"] = {"runAsNonRoot": True}
    env = []
    if rnd.random() < 0.3:
        env.append({"name": "CODEXK8S_BUILD_REF", "value": pick(REFS_OK + REFS_BAD)})
    if rnd.random() < 0.2:
        env.append({"name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": pick(CACHE)})
    if rnd.random() < 0.2:
        env.append({"name": "LOG_LEVEL", "value": "info"})
    if env:
        c["env"] = env
    if "kaniko" in c["image"] and rnd.random() < 0.8:
        c["args"] = pick([["--cache"], ["--cache=true"], ["--cache=false"], ["--cache-repo=x", "--context=dir:///w"], ["--cache=True", "--destination=x"]])
    return c


def pod_spec(i, restart=None):
    s = {"containers": [container(i, n) for n in range(rnd.choice([1, 1, 2, 3]))]}
    if rnd.random() < 0.2:
        s["initContainers"] = [container(i, 9)]
    if rnd.random() < 0.15:
        s["volumes"] = [{"name": "host", "hostPath": {"path": pick(["/var/log", "/etc"])}}]
    elif rnd.random() < 0.2:
        s["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    if rnd.random() < 0.1:
        s["hostNetwork"] = True
    if rnd.random() < 0.05:
        s["hostPID"] = True
    if rnd.random() < 0.2:
        s["securityContext"] = {"runAsNonRoot": rnd.random() < 0.7}
    if restart:
        s["restartPolicy"] = restart
    return s


def meta(kind, i, ns, workload=True):
    m = {"name": f"{kind.lower()}-{i}"}
    if ns:
        m["namespace"] = ns
    ls = labels(i, workload)
    if ls:
        m["labels"] = ls
    if rnd.random() < 0.1:
        m["annotations"] = {pick(["codexk8s.io/run-id", "codex-k8s.dev/run-id", "example.com/codexk8s.io"]): "r1"}
    return m


def template(i):
    sel = {"app": f"w{i}"}
    t = {"metadata": {"labels": dict(sel)}, "spec": pod_spec(i)}
    if rnd.random() < 0.1:
        t["metadata"]["labels"]["codexk8s.io/run-id"] = "x"
    return sel, t


for i in range(60):
    sel, t = template(i)
    out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("Deployment", i, NS[i % 2]),
                "spec": {"replicas": pick([1, 2, 3, 5, 6, 10]), "selector": {"matchLabels": sel}, "template": t}})
for i in range(12):
    sel, t = template(100 + i)
    out.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("StatefulSet", i, NS[i % 2]),
                "spec": {"replicas": pick([1, 3, 7]), "serviceName": "db", "selector": {"matchLabels": sel}, "template": t}})
for i in range(10):
    sel, t = template(200 + i)
    out.append({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("DaemonSet", i, NS[i % 2]),
                "spec": {"selector": {"matchLabels": sel}, "template": t}})
for i in range(6):
    sel, t = template(300 + i)
    out.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("ReplicaSet", i, NS[i % 2]),
                "spec": {"replicas": 1, "selector": {"matchLabels": sel}, "template": t}})
for i in range(40):
    out.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta("Pod", i, NS[i % 2]), "spec": pod_spec(400 + i)})
for i in range(15):
    job = {"template": {"spec": pod_spec(500 + i, "Never")}}
    if rnd.random() < 0.7:
        job["ttlSecondsAfterFinished"] = pick([0, 600, 86400, 100000])
    out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("Job", i, NS[i % 2]), "spec": job})
for i in range(10):
    out.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("CronJob", i, NS[i % 2]),
                "spec": {"schedule": pick(["* * * * *", "*/5 * * * *", "0 3 * * *", "* 1 * * *"]),
                         "jobTemplate": {"spec": {"template": {"spec": pod_spec(600 + i, "OnFailure")}}}}})
for i in range(25):
    data = {f"k{n}": "v" for n in range(rnd.choice([0, 1, 3, 5]))}
    if rnd.random() < 0.3:
        data["CODEXK8S_BUILD_REF"] = pick(REFS_OK + REFS_BAD)
    if rnd.random() < 0.25:
        data["CODEXK8S_KANIKO_CACHE_ENABLED"] = pick(CACHE)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("ConfigMap", i, NS[i % 2], False)}
    if data:
        cm["data"] = data
    if rnd.random() < 0.1:
        cm["binaryData"] = {"bin": "AAEC"}
    out.append(cm)
for i in range(12):
    s = {"apiVersion": "v1", "kind": "Secret", "metadata": meta("Secret", i, NS[i % 2], False),
         "type": pick(["Opaque", "kubernetes.io/basic-auth", "kubernetes.io/basic-auth"])}
    r = rnd.random()
    if r < 0.35:
        s["stringData"] = {"username": "u", "password": "p"}
    elif r < 0.7:
        s["data"] = {"username": "dQ==", "password": "cA=="}
    else:
        s["stringData"] = {"password": "p"}
    out.append(s)
for i in range(15):
    t = pick(["ClusterIP", "NodePort", "LoadBalancer", None])
    spec = {"ports": [{"port": 80}], "selector": {"app": "x"}}
    if t:
        spec["type"] = t
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": meta("Service", i, NS[i % 2], False), "spec": spec})
for i in range(10):
    hosts = [pick(["a.example.com", "b.example.com", "evil.test", "x.example.org"]) for _ in range(rnd.choice([1, 2]))]
    spec = {"rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}} for h in hosts]}
    if rnd.random() < 0.6:
        spec["tls"] = [{"hosts": hosts[: rnd.choice([1, len(hosts)])], "secretName": "tls"}]
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("Ingress", i, NS[i % 2], False), "spec": spec})
for i in range(10):
    m = meta("Namespace", i, None, False)
    m["name"] = pick(["team-", "kube-", "proj-"]) + str(i)
    m.setdefault("labels", {})
    if rnd.random() < 0.8:
        m["labels"]["cel-test"] = "1"
    if "team" not in m["labels"] and rnd.random() < 0.3:
        m["labels"]["team"] = "T1"
    out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": m})
for i in range(10):
    m = meta("ClusterRole", i, None, False)
    if i % 4 == 3:
        m["name"] = f"system:cel-{i}"
    rules = [{"apiGroups": [""], "resources": [pick(["pods", "*", "configmaps"])], "verbs": [pick(["get", "*", "list"])]}]
    out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": m, "rules": rules})
for i in range(6):
    rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": [pick(["get", "*"])]}]
    out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("Role", i, NS[i % 2], False), "rules": rules})
for i in range(9):
    spec = {"selector": {"matchLabels": {"app": "x"}}}
    r = i % 4
    if r == 0:
        spec["maxUnavailable"] = 1
    elif r == 1:
        spec["minAvailable"] = "100%"
    elif r == 2:
        spec["minAvailable"] = "50%"
    else:
        spec["minAvailable"] = 2
    out.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("PodDisruptionBudget", i, NS[i % 2], False), "spec": spec})

print(json.dumps(out, indent=1, sort_keys=True))
