//! Reading `kubectl ck8s ... -o json` reports in tests (the shape documented in
//! kubectl-ck8s/report.schema.json: `checks[]` with `id`, `status`, `detail`).

use serde_json::Value;
use std::process::Output;

/// The JSON report on a run's stdout; panics with both streams when it is not JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The check `id` of a report; panics with the report when it has none.
pub fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}
