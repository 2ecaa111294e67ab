//! The benchmark's work in a loop of a fixed length, for counters that do not depend on the
//! machine's speed: the instructions of N evaluations of the three built-in rules on the 4 KB
//! Deployment (parse included), which are steady where the time per evaluation is not.
//!
//! ```sh
//! cargo build --release -p ck8s-policy-cel --example evaluate_loop
//! perf stat -e instructions:u target/release/examples/evaluate_loop 20000
//! ```
//!
//! Divide by N after subtracting a run with N = 0 (the set-up).

use ck8s_policy_cel::{Json, Operation, PolicySet, Request};
use std::hint::black_box;

const DEPLOYMENT: &str = include_str!("../../runtime/benches/deployment-4k.json");
const BUILTINS: [&str; 3] = [
    include_str!("../testdata/policies/08-ck8s-build-ref.yaml"),
    include_str!("../testdata/policies/09-ck8s-legacy-labels.yaml"),
    include_str!("../testdata/policies/10-ck8s-kaniko-cache.yaml"),
];

fn main() {
    let n: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: evaluate_loop N");
            std::process::exit(2);
        }
    };
    let mut set = PolicySet::default();
    for (i, text) in BUILTINS.iter().enumerate() {
        set.add(&format!("builtin-{i}"), text)
            .expect("the built-in rules load");
    }
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "codex-k8s-prod", "labels": {"kubernetes.io/metadata.name": "codex-k8s-prod"}}});
    for _ in 0..n {
        let object = Json::parse(black_box(DEPLOYMENT)).expect("the Deployment parses");
        let mut request = Request::for_object(Operation::Create, object);
        request.namespace_object = Some((&namespace).into());
        let eval = set.evaluate(&request, None);
        assert_eq!(
            eval.outcomes.len(),
            3,
            "the three rules judge the Deployment"
        );
        assert!(eval.decision().allowed);
    }
}
