//! Request bodies under a memory budget and a deadline.
//!
//! A body is read only once it has a place in the budget (`--max-inflight-bytes`): the whole
//! `Content-Length` up front, or, for a chunked body, each piece before the next is read. Its
//! place is held until the review is answered, so the budget bounds bodies being read and
//! being judged. A body must arrive within `--body-timeout` plus its size at
//! `--body-min-rate`. When no place frees up within `--queue-timeout`, only a short prefix is
//! read, for the review's `uid`, and the request gets the "overloaded" answer.

use crate::metrics::ConnectionMetrics;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How much of an unread body is read to find the review's uid when answering "overloaded".
/// The API server writes `request.uid` first (Go field order), within the first ~100 bytes.
pub const UID_PREFIX_BYTES: usize = 4096;

/// The limits a body is read under.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub base_timeout: Duration,
    pub min_rate: u64,
}

impl BodyLimits {
    /// The time `len` bytes may take.
    pub fn allowance(&self, len: usize) -> Duration {
        self.base_timeout + Duration::from_secs_f64(len as f64 / self.min_rate as f64)
    }
}

/// The budget shared by every request body of the process.
pub struct Budget {
    permits: Arc<Semaphore>,
    metrics: ConnectionMetrics,
}

/// A body's place in the [`Budget`]: given back when dropped.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    metrics: ConnectionMetrics,
}

impl Place {
    fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        self.metrics.body_bytes.inc_by(more.num_permits() as i64);
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.metrics.body_bytes.dec_by(self.bytes() as i64);
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Over `--max-body-bytes` (413).
    TooLarge,
    /// Slower than the deadline allows (408; the connection is closed).
    TooSlow,
    /// No room in the budget in time; the prefix read for the uid (429 "overloaded").
    Overloaded { prefix: Bytes },
    /// The client broke off or sent a malformed body (400).
    Broken(String),
}

impl Budget {
    pub fn new(bytes: usize, metrics: ConnectionMetrics) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(bytes)),
            metrics,
        }
    }

    /// A place for `n` bytes, waiting until `until` at most.
    async fn reserve(&self, n: usize, until: Instant) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        if let Ok(p) = self.permits.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        self.metrics.body_budget_waits.inc();
        tokio::time::timeout_at(until, self.permits.clone().acquire_many_owned(n))
            .await
            .ok()?
            .ok()
    }

    /// Reads `body` (of `content_length`, if the client said) within the budget and the
    /// limits; waits for room until `queue_until`. The [`Place`] must be kept until the
    /// review is answered.
    pub async fn read(
        &self,
        mut body: Body,
        content_length: Option<u64>,
        limits: &BodyLimits,
        queue_until: Instant,
    ) -> Result<(Bytes, Place), BodyError> {
        let mut place = Place {
            permit: None,
            metrics: self.metrics.clone(),
        };
        if let Some(len) = content_length {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > limits.max_bytes {
                return Err(BodyError::TooLarge);
            }
            match self.reserve(len, queue_until).await {
                Some(p) => place.add(p),
                None => return Err(overloaded(body, limits).await),
            }
            let deadline = Instant::now() + limits.allowance(len);
            let mut buf = BytesMut::with_capacity(len);
            while let Some(frame) = next_data(&mut body, deadline).await? {
                if buf.len() + frame.len() > len {
                    return Err(BodyError::Broken(
                        "body longer than its Content-Length".into(),
                    ));
                }
                buf.extend_from_slice(&frame);
            }
            return Ok((buf.freeze(), place));
        }
        // Chunked: each piece gets its place before the next one is read; the deadline
        // grows with what arrived.
        let start = Instant::now();
        let mut buf = BytesMut::new();
        loop {
            let deadline = start + limits.allowance(buf.len() + (64 << 10));
            let Some(frame) = next_data(&mut body, deadline).await? else {
                break;
            };
            if buf.len() + frame.len() > limits.max_bytes {
                return Err(BodyError::TooLarge);
            }
            match self.reserve(frame.len(), queue_until).await {
                Some(p) => place.add(p),
                None => {
                    buf.extend_from_slice(&frame[..frame.len().min(UID_PREFIX_BYTES)]);
                    buf.truncate(UID_PREFIX_BYTES);
                    return Err(BodyError::Overloaded {
                        prefix: buf.freeze(),
                    });
                }
            }
            buf.extend_from_slice(&frame);
        }
        Ok((buf.freeze(), place))
    }
}

/// The next data frame by `deadline`; `Ok(None)` at the end of the body.
async fn next_data(body: &mut Body, deadline: Instant) -> Result<Option<Bytes>, BodyError> {
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // trailers: nothing to keep
            }
        }
    }
}

/// Reads at most [`UID_PREFIX_BYTES`] of a body that has no place in the budget.
async fn overloaded(mut body: Body, limits: &BodyLimits) -> BodyError {
    let deadline = Instant::now() + limits.allowance(UID_PREFIX_BYTES);
    let mut prefix = BytesMut::new();
    while prefix.len() < UID_PREFIX_BYTES {
        match next_data(&mut body, deadline).await {
            Ok(Some(frame)) => {
                let room = UID_PREFIX_BYTES - prefix.len();
                prefix.extend_from_slice(&frame[..frame.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    BodyError::Overloaded {
        prefix: prefix.freeze(),
    }
}

/// `request.uid` of an `AdmissionReview` from the first bytes of its JSON, which may be cut
/// anywhere after it. Bounded work: the input is at most a few KiB.
pub fn uid_in_prefix(prefix: &[u8]) -> Option<String> {
    let prefix = &prefix[..prefix.len().min(UID_PREFIX_BYTES)];
    let mut uid = None;
    let mut de = serde_json::Deserializer::from_slice(prefix);
    // Stops with an error as soon as the uid is found (or the prefix ends): the result is
    // what was found, not whether the document was whole.
    let _ = Find {
        path: &["request", "uid"],
        out: &mut uid,
    }
    .deserialize(&mut de);
    uid.filter(|u: &String| !u.is_empty() && u.len() <= 256)
}

/// Walks objects along `path` and stores the string at its end.
struct Find<'a> {
    path: &'a [&'a str],
    out: &'a mut Option<String>,
}

const FOUND: &str = "found";

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            *self.out = Some(serde::Deserialize::deserialize(d)?);
            return Err(serde::de::Error::custom(FOUND));
        }
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.path[0] {
                return map.next_value_seed(Find {
                    path: &self.path[1..],
                    out: self.out,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_is_found_in_a_cut_review() {
        let review = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{"group":"apps","version":"v1","kind":"Deployment"},"object":{"metadata":{"name":"x","annotations":{"a":"#;
        for cut in [review.find("\"kind\":{").unwrap(), review.len()] {
            assert_eq!(
                uid_in_prefix(&review.as_bytes()[..cut]).as_deref(),
                Some("705ab4f5-6393-11e8-b7cc-42010a800002"),
                "cut at {cut}"
            );
        }
        // fields before `request` and before `uid` are skipped, whatever they hold
        let later = r#"{"apiVersion":"admission.k8s.io/v1","x":[1,{"uid":"no"}],"request":{"kind":{"uid":"no"},"uid":"u-1","object":{"#;
        assert_eq!(uid_in_prefix(later.as_bytes()).as_deref(), Some("u-1"));
    }

    #[test]
    fn no_uid_no_answer() {
        for text in [
            "",
            "not json",
            r#"{"request":{"kind":{"#,
            r#"{"request":{"uid":"cut"#,
            r#"{"request":{"uid":7}}"#,
            r#"{"uid":"top-level"}"#,
            r#"{"request":{"uid":""}}"#,
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ] {
            assert_eq!(uid_in_prefix(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn allowance_grows_with_size() {
        let l = BodyLimits {
            max_bytes: 8 << 20,
            base_timeout: Duration::from_secs(3),
            min_rate: 2 << 20,
        };
        assert_eq!(l.allowance(0), Duration::from_secs(3));
        assert_eq!(l.allowance(8 << 20), Duration::from_secs(7));
    }
}
