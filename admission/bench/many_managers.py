#!/usr/bin/env python3
"""The API server's review of the benchmarks' Deployment as an object ten field managers have
written to, with a status: 44 KB, the shape of a long-lived workload (issue 24). Writes it to
the path given (default: /tmp/many-managers-review.json):

    admission/bench/many_managers.py /tmp/big.json
    REVIEW=/tmp/big.json BIN_A=... BIN_B=... admission/bench/paced_ab.sh
"""
import copy
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
review = json.loads((here / "apiserver-review.json").read_text())
obj = review["request"]["object"]
entries = obj["metadata"]["managedFields"]
managed = []
for i in range(10):
    for entry in entries:
        entry = copy.deepcopy(entry)
        entry["manager"] = f"manager-{i}"
        managed.append(entry)
obj["metadata"]["managedFields"] = managed
condition = {
    "type": "Available",
    "status": "True",
    "reason": "MinimumReplicasAvailable",
    "message": "Deployment has minimum availability.",
    "lastUpdateTime": "2026-12-05T10:00:00Z",
    "lastTransitionTime": "2026-12-05T10:00:00Z",
}
obj["status"] = {"conditions": [condition] * 4, "replicas": 2, "readyReplicas": 2}
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/many-managers-review.json")
text = json.dumps(review, separators=(",", ":"))
out.write_text(text)
print(f"{out}: {len(text)} bytes")
