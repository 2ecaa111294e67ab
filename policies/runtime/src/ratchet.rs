//! Ratcheting: which violations of an UPDATE's new object the old object already had. Pure
//! logic over the policies' verdicts; `set.rs` decides when to ask for it.

use crate::subject::Subject;
use ck8s_policy_api::{GroupVersionKind, Object, ValueSource, Violation};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::cell::OnceCell;

/// Splits the new object's violations into `(new, kept)`: kept are those the old object
/// already had, each old violation keeping at most one new one.
pub(crate) fn ratchet(
    violations: Vec<Violation>,
    old: &[Violation],
    values: &SecretValues<'_>,
) -> (Vec<Violation>, Vec<Violation>) {
    let mut old: Vec<Option<Identity<'_>>> = old
        .iter()
        .map(|v| Identity::of(v, |path| values.in_old(path)))
        .collect();
    let (mut fresh, mut kept) = (Vec::new(), Vec::new());
    for v in violations {
        let found = Identity::of(&v, |path| values.in_new(path))
            .and_then(|id| old.iter().position(|o| o.as_ref() == Some(&id)));
        match found {
            Some(at) => {
                old[at] = None;
                kept.push(v);
            }
            None => fresh.push(v),
        }
    }
    (fresh, kept)
}

/// What makes two violations of one policy the same: the field path and the offending
/// value. A Secret's value is never in a violation (it would be shown), so its bytes at the
/// path are compared through their sha256; a violation that names no value is identified by
/// its message instead.
#[derive(PartialEq, Eq)]
struct Identity<'v> {
    path: &'v str,
    value: Option<&'v str>,
    message: Option<&'v str>,
    secret: Option<[u8; 32]>,
}

impl<'v> Identity<'v> {
    /// `None` when the violation cannot be compared (a Secret value at a path that is not a
    /// config entry): it is never kept.
    fn of(v: &'v Violation, secret_at: impl Fn(&str) -> Option<[u8; 32]>) -> Option<Self> {
        let secret = match v.source {
            ValueSource::Secret => Some(secret_at(&v.path)?),
            ValueSource::Literal => None,
        };
        Some(Identity {
            path: &v.path,
            value: v.value.as_deref(),
            message: (v.value.is_none() && secret.is_none()).then_some(v.message.as_str()),
            secret,
        })
    }
}

/// The digests of Secret values of the new and the old object, read on demand (only a
/// violation from a Secret asks, and each object is parsed at most once more).
pub(crate) struct SecretValues<'a> {
    kind: &'a GroupVersionKind,
    raw: [&'a RawValue; 2],
    parsed: [OnceCell<Option<Object<'a>>>; 2],
}

impl<'a> SecretValues<'a> {
    const NEW: usize = 0;
    const OLD: usize = 1;

    pub(crate) fn of_update(subject: &'a Subject<'a>, before: &'a Subject<'a>) -> Self {
        let raw = |s: &'a Subject<'a>| s.object.unwrap_or(RawValue::NULL);
        SecretValues {
            kind: &subject.kind,
            raw: [raw(subject), raw(before)],
            parsed: Default::default(),
        }
    }

    fn digest(&self, which: usize, path: &str) -> Option<[u8; 32]> {
        let object = self.parsed[which]
            .get_or_init(|| Object::parse_valid(self.kind, self.raw[which]).ok())
            .as_ref()?;
        Some(Sha256::digest(object.config_value(path)?).into())
    }

    fn in_new(&self, path: &str) -> Option<[u8; 32]> {
        self.digest(Self::NEW, path)
    }

    fn in_old(&self, path: &str) -> Option<[u8; 32]> {
        self.digest(Self::OLD, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ck8s_policy_api::Operation;
    use serde_json::value::RawValue;

    fn v(path: &str, value: Option<&str>, message: &str) -> Violation {
        Violation {
            path: path.into(),
            message: message.into(),
            value: value.map(Into::into),
            source: ValueSource::Literal,
            fix: "fix it".into(),
        }
    }

    fn secret(path: &str) -> Violation {
        Violation {
            source: ValueSource::Secret,
            ..v(path, None, "bad ref")
        }
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    /// `f` with the secret values of an UPDATE from `old` to `new` (Secret `data`, base64).
    fn with_values<R>(new: &str, old: &str, f: impl FnOnce(&SecretValues<'_>) -> R) -> R {
        let object = |data: &str| {
            raw(&format!(
                r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s"}},"data":{data}}}"#
            ))
        };
        let (new, old) = (object(new), object(old));
        let mut subject = Subject::from_manifest(&new, Operation::Update).unwrap();
        subject.old_object = Some(&old);
        let before = subject.before().unwrap();
        f(&SecretValues::of_update(&subject, &before))
    }

    const NO_SECRETS: (&str, &str) = ("{}", "{}");

    #[test]
    fn a_violation_the_old_object_had_is_kept_and_a_new_one_is_not() {
        let (new, old) = NO_SECRETS;
        with_values(new, old, |values| {
            let env = "spec.containers[0].env[REF]";
            let old = [v(env, Some("-b x"), "not a ref")];
            // Same path and value: kept, even if the message changed (a new policy version).
            let (fresh, kept) = ratchet(vec![v(env, Some("-b x"), "reworded")], &old, values);
            assert!(fresh.is_empty());
            assert_eq!(kept.len(), 1);
            // Another value at the same path: new.
            let (fresh, kept) = ratchet(vec![v(env, Some("--orphan"), "not a ref")], &old, values);
            assert_eq!((fresh.len(), kept.len()), (1, 0));
            // The same value at another path: new.
            let other = "spec.containers[1].env[REF]";
            let (fresh, kept) = ratchet(vec![v(other, Some("-b x"), "not a ref")], &old, values);
            assert_eq!((fresh.len(), kept.len()), (1, 0));
        });
    }

    #[test]
    fn each_old_violation_keeps_at_most_one_new_one() {
        let (new, old) = NO_SECRETS;
        with_values(new, old, |values| {
            let same = || v("metadata.labels[a]", Some("1"), "legacy");
            let (fresh, kept) = ratchet(vec![same(), same()], &[same()], values);
            assert_eq!((fresh.len(), kept.len()), (1, 1));
            let (fresh, kept) = ratchet(vec![same(), same()], &[same(), same()], values);
            assert_eq!((fresh.len(), kept.len()), (0, 2));
        });
    }

    #[test]
    fn a_violation_without_a_value_is_identified_by_its_message() {
        let (new, old) = NO_SECRETS;
        with_values(new, old, |values| {
            let old = [v("spec.args", None, "--cache is on")];
            let (fresh, _) = ratchet(vec![v("spec.args", None, "--cache is on")], &old, values);
            assert!(fresh.is_empty());
            let (fresh, _) = ratchet(vec![v("spec.args", None, "--cache=true")], &old, values);
            assert_eq!(fresh.len(), 1);
        });
    }

    #[test]
    fn a_secret_is_compared_by_the_digest_of_its_values() {
        // "LWIgeA==" is "-b x", "LS1vcnBoYW4=" is "--orphan".
        let path = "data.REF";
        with_values(r#"{"REF":"LWIgeA=="}"#, r#"{"REF":"LWIgeA=="}"#, |values| {
            let (fresh, kept) = ratchet(vec![secret(path)], &[secret(path)], values);
            assert_eq!((fresh.len(), kept.len()), (0, 1));
        });
        with_values(
            r#"{"REF":"LS1vcnBoYW4="}"#,
            r#"{"REF":"LWIgeA=="}"#,
            |values| {
                let (fresh, kept) = ratchet(vec![secret(path)], &[secret(path)], values);
                assert_eq!((fresh.len(), kept.len()), (1, 0));
            },
        );
        // A Secret violation at a path that is no config entry cannot be compared: never kept.
        with_values(r#"{"REF":"LWIgeA=="}"#, r#"{"REF":"LWIgeA=="}"#, |values| {
            let odd = secret("spec.containers[0].env[REF]");
            let (fresh, kept) = ratchet(vec![odd.clone()], &[odd], values);
            assert_eq!((fresh.len(), kept.len()), (1, 0));
        });
    }
}
