//! `admission.k8s.io/v1` `AdmissionReview` requests, parsed without copying the objects.

use ck8s_policy_api::{GroupVersionKind, Operation, skim};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// `group/version/resource` of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(default, borrow)]
    pub username: Option<Cow<'a, str>>,
}

/// The fields of an `AdmissionRequest` ck8s uses. `object` and `oldObject` stay raw JSON:
/// they are handed to the policies as they are, and `oldObject` is never parsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default, borrow)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Operation,
    #[serde(default, borrow)]
    pub user_info: UserInfo<'a>,
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The `AdmissionReview` this request was read from, for policies that read what the
    /// fields above leave out (ValidatingAdmissionPolicies' `request` variable: userInfo's
    /// groups, options, ...): [`raw_request`] cuts the request out of it when one asks.
    #[serde(skip)]
    pub review: Option<&'a str>,
}

/// The `request` of an `AdmissionReview`'s text, raw. Read again only for the policies that
/// need the request whole, so that a review is read once when none does.
pub fn raw_request(review: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(default, borrow)]
        request: Option<&'a RawValue>,
    }
    let outer: Outer = serde_json::from_str(review).ok()?;
    outer.request
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    request: Option<AdmissionRequest<'a>>,
}

/// Why a body is not an `admission.k8s.io/v1` `AdmissionReview` request. Each is a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not an AdmissionReview: {0}")]
    Malformed(String),
    #[error("apiVersion must be admission.k8s.io/v1, got {0:?}")]
    ApiVersion(String),
    #[error("kind must be AdmissionReview, got {0:?}")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("request.uid is empty")]
    NoUid,
    #[error("JSON nesting deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest JSON nesting accepted. Real objects, CRD schemas included, stay far below it.
pub const MAX_DEPTH: usize = 256;

/// The nesting depth of a JSON text (brackets outside strings), stopping early past `limit`.
/// serde_json skips ignored values without a depth limit, so this is checked up front.
///
/// Strings, most of a Kubernetes object's bytes, are crossed eight bytes at a time
/// ([`skim::string_end`]): a byte-by-byte walk cost a webhook review about 4% of its CPU.
pub fn exceeds_depth(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = json.get(at) {
        at += 1;
        match b {
            b'"' => match skim::string_end(json, at) {
                Some(end) => at = end,
                None => return false,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses an `AdmissionReview` body and returns its request.
///
/// Absurdly deep documents are refused before parsing ([`MAX_DEPTH`]).
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<'_>, ReviewError> {
    let text = std::str::from_utf8(body).map_err(|_| ReviewError::NotUtf8)?;
    if exceeds_depth(body, MAX_DEPTH) {
        return Err(ReviewError::TooDeep(MAX_DEPTH));
    }
    // One pass: the request's fields are read and its objects cut out as raw JSON.
    let review: Review =
        serde_json::from_str(text).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    match review.api_version.as_deref() {
        Some("admission.k8s.io/v1") => {}
        other => return Err(ReviewError::ApiVersion(other.unwrap_or("").to_string())),
    }
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => return Err(ReviewError::Kind(other.unwrap_or("").to_string())),
    }
    let mut request = review.request.ok_or(ReviewError::NoRequest)?;
    request.review = Some(text);
    if request.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind":{"group":"apps","version":"v1","kind":"Deployment"},
        "resource":{"group":"apps","version":"v1","resource":"deployments"},
        "name":"web","namespace":"codex-k8s-prod","operation":"CREATE",
        "userInfo":{"username":"admin","groups":["system:masters"]},
        "object":{"kind":"Deployment","metadata":{"name":"web"}},"oldObject":null,"dryRun":false}}"#;

    /// The byte-by-byte walk [`exceeds_depth`] replaced, kept as its reference.
    fn deepest(json: &[u8]) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
        for &b in json {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn the_depth_scan_skips_strings_and_their_escapes() {
        let cases: &[&[u8]] = &[
            br#"{"a":[1,{"b":"[[[["}]}"#,
            br#"{"a":"x\"[[[","b":[[]]}"#,
            br#"{"a":"\\","b":[[[]]]}"#,
            br#"{"a":"\\\"[{","c":{}}"#,
            br#"["unterminated [[[["#,
            br#"["ends in a backslash \"#,
            br#"[[["\"#,
            b"",
            b"[[[[[]]]]]",
            REVIEW.as_bytes(),
        ];
        for json in cases {
            let depth = deepest(json);
            for limit in 0..8 {
                assert_eq!(
                    exceeds_depth(json, limit),
                    depth > limit,
                    "{} at limit {limit}",
                    String::from_utf8_lossy(json)
                );
            }
        }
    }

    /// Random texts of the bytes that matter (quotes, backslashes, brackets) among others, of
    /// every length up to 64: strings that cross the scan's eight-byte words at every offset.
    #[test]
    fn the_depth_scan_agrees_with_the_byte_walk_on_random_texts() {
        const BYTES: &[u8] = b"\"\"\"\\\\{}[]ab ,:";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 65) as usize;
            let json: Vec<u8> = (0..len)
                .map(|_| BYTES[(next() % BYTES.len() as u64) as usize])
                .collect();
            let depth = deepest(&json);
            for limit in 0..4 {
                assert_eq!(
                    exceeds_depth(&json, limit),
                    depth > limit,
                    "{} at limit {limit}",
                    String::from_utf8_lossy(&json)
                );
            }
        }
    }

    #[test]
    fn parses_a_real_shaped_review() {
        let r = parse_review(REVIEW.as_bytes()).unwrap();
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r.operation, Operation::Create);
        assert_eq!(r.resource.resource, "deployments");
        assert_eq!(r.user_info.username.as_deref(), Some("admin"));
        assert!(r.object.unwrap().get().starts_with("{\"kind\""));
        assert!(r.old_object.is_none());
        let request: serde_json::Value =
            serde_json::from_str(raw_request(r.review.unwrap()).unwrap().get()).unwrap();
        assert_eq!(request["userInfo"]["groups"][0], "system:masters");
        assert_eq!(request["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    #[test]
    fn rejects_what_is_not_a_v1_review() {
        assert_eq!(parse_review(b"\xff\xfe").unwrap_err(), ReviewError::NotUtf8);
        assert!(matches!(
            parse_review(b"not json").unwrap_err(),
            ReviewError::Malformed(_)
        ));
        let v1beta1 = REVIEW.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        assert!(matches!(
            parse_review(v1beta1.as_bytes()).unwrap_err(),
            ReviewError::ApiVersion(_)
        ));
        let kind = REVIEW.replace("\"AdmissionReview\"", "\"Pod\"");
        assert!(matches!(
            parse_review(kind.as_bytes()).unwrap_err(),
            ReviewError::Kind(_)
        ));
        let none = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert_eq!(
            parse_review(none.as_bytes()).unwrap_err(),
            ReviewError::NoRequest
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let nested = REVIEW.replace(
            "\"dryRun\":false",
            &format!("\"dryRun\":false,\"x\":{deep}"),
        );
        assert_eq!(
            parse_review(nested.as_bytes()).unwrap_err(),
            ReviewError::TooDeep(MAX_DEPTH)
        );
        // brackets inside strings do not count
        let in_string = REVIEW.replace(
            "\"name\":\"web\",",
            &format!("\"name\":\"{}\",", "[".repeat(1000)),
        );
        assert!(parse_review(in_string.as_bytes()).is_ok());
    }
}
