//! Evaluates CEL expressions (arguments) with `object` bound to the JSON in $OBJECT, printing
//! each result: a quick way to see what the evaluator does with an expression.
//!
//! `OBJECT='{"a": 1}' cargo run -p ck8s-policy-cel --example cel_eval -- 'object.a + 1'`

fn main() {
    let object: serde_json::Value =
        serde_json::from_str(&std::env::var("OBJECT").unwrap_or_else(|_| "{}".into())).unwrap();
    for src in std::env::args().skip(1) {
        let r = ck8s_policy_cel::evaluate_expression(&src, &[("object", object.clone())]);
        println!("{src}\n  => {r:?}");
    }
}
