#!/usr/bin/env python3
"""The workload that trains ck8s-admission's profile-guided optimisation (admission/pgo/README.md).

Posts AdmissionReviews to a running ck8s-admission over keep-alive TLS connections, in the mix a
cluster sends: mostly the 4 KB Deployment of the benchmarks (allowed by the built-ins), and every
object of policies/cel/testdata/objects.json (15 kinds, allowed and denied by the built-ins and
the CEL policies) as CREATE, UPDATE with an old object (ratcheting) and DELETE. Two phases, as
the webhook sees them: one client at a cluster's rate (every review finds the server idle) and
8 clients at full speed (reviews overlap); /metrics is scraped now and then, as Prometheus does.

Every answer must be a 200 AdmissionReview with the request's uid: a workload that fails does
not train the paths that matter.

    python3 admission/pgo/train.py HTTPS_PORT METRICS_PORT [PACED_SECONDS [LOAD_SECONDS]]
"""
import http.client
import json
import pathlib
import ssl
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def plural(kind):
    kind = kind.lower()
    if kind.endswith("s"):
        return kind + "es"
    if kind.endswith("y"):
        return kind[:-1] + "ies"
    return kind + "s"


def review(uid, operation, obj, old=None):
    group, _, version = obj["apiVersion"].rpartition("/")
    request = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": plural(obj["kind"])},
        "name": obj["metadata"]["name"],
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:codex-k8s-prod:deployer", "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else obj,
        "oldObject": old,
        "dryRun": False,
    }
    if "namespace" in obj["metadata"]:
        request["namespace"] = obj["metadata"]["namespace"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def workload():
    """(uid, body) pairs: the Deployment three times in four, the test objects between."""
    deployment = json.load(open(ROOT / "policies/runtime/benches/deployment-4k.json"))
    objects = json.load(open(ROOT / "policies/cel/testdata/objects.json"))
    others = []
    for i, obj in enumerate(objects):
        others.append(review(f"create-{i}", "CREATE", obj))
        if i % 4 == 0:
            others.append(review(f"update-{i}", "UPDATE", obj, old=obj))
        if i % 16 == 0:
            others.append(review(f"delete-{i}", "DELETE", obj, old=obj))
    mix = []
    for i, other in enumerate(others):
        for j in range(3):
            mix.append(review(f"deployment-{i}-{j}", "CREATE", deployment))
        mix.append(other)
    return [(r["request"]["uid"], json.dumps(r).encode()) for r in mix]


def connect(port):
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection("127.0.0.1", port, context=tls)


def post(conn, uid, body):
    conn.request("POST", "/validate", body, {"content-type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200 or json.loads(text)["response"]["uid"] != uid:
        sys.exit(f"error: {uid}: unexpected answer {answer.status}: {text[:300]!r}")


def scrape(metrics_port):
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port)
    conn.request("GET", "/metrics")
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f"error: /metrics answered {answer.status}")


def paced(port, metrics_port, reviews, seconds, rate=150):
    conn = connect(port)
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        uid, body = reviews[n % len(reviews)]
        post(conn, uid, body)
        n += 1
        if n % rate == 0:
            scrape(metrics_port)
    return n


def loaded(port, reviews, seconds, clients=8):
    counts, failures = [0] * clients, []

    def client(k):
        try:
            conn, i = connect(port), k
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                uid, body = reviews[i % len(reviews)]
                post(conn, uid, body)
                counts[k] += 1
                i += clients
        except BaseException as e:  # sys.exit in a thread raises SystemExit there
            failures.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"error: a loaded client failed: {failures[0]}")
    return sum(counts)


def main():
    port, metrics_port = int(sys.argv[1]), int(sys.argv[2])
    paced_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    load_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20
    reviews = workload()
    n = paced(port, metrics_port, reviews, paced_seconds)
    m = loaded(port, reviews, load_seconds)
    print(f"trained on {n} paced and {m} concurrent reviews ({len(reviews)} distinct)")


if __name__ == "__main__":
    main()
