//! Benchmark (issue 19, Performance): from a ValidatingAdmissionPolicy file saved into a
//! running ck8s-admission's `--policies DIR` to the first review it decides. Each round saves
//! a policy with a new message (atomically: write then rename, as editors and ConfigMap
//! volumes do) and sends reviews back to back until one is denied with that message.
//!
//! ```sh
//! cargo run -q -p ck8s-tests --example save_to_enforced
//! ```
//! Goal: under 1 s. The webhook runs in this process, over TLS, with its default reload
//! interval (2 s): only file events make it faster than that.

use ck8s_tests::webhook::{TestWebhook, client_trusting, review_of};
use serde_json::json;
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;

fn policy(round: usize) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: round-policy}}
spec:
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}
  validations:
  - expression: "false"
    message: "round {round}"
"#
    )
}

#[tokio::main]
async fn main() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let w = TestWebhook::start(
        &cert.pem(),
        &key.serialize_pem(),
        &["--reload-interval=2s"],
        |_| {},
    )
    .await;
    let client = client_trusting(&cert.pem()).build().unwrap();
    let review = review_of(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        "configmaps",
        "0b6f6d3c-1111-2222-3333-444455556666",
    );
    let mut took = Vec::new();
    for round in 0..ROUNDS {
        let staged = w.path(&format!("round-{round}.tmp"));
        std::fs::write(&staged, policy(round)).unwrap();
        let saved = Instant::now();
        std::fs::rename(&staged, w.path("policies/round.yaml")).unwrap();
        let expected = format!("denied request: round {round}");
        loop {
            let answer: serde_json::Value = client
                .post(w.url("/validate"))
                .json(&review)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let message = answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or("");
            if message.contains(&expected) {
                took.push(saved.elapsed());
                break;
            }
            assert!(
                saved.elapsed() < Duration::from_secs(10),
                "round {round} not in force after 10 s"
            );
        }
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "save to enforced, {ROUNDS} rounds: p50 {:.1} ms, max {:.1} ms",
        ms(took[ROUNDS / 2]),
        ms(took[ROUNDS - 1])
    );
    w.shutdown().await;
}
