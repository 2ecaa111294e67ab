//! Stores kept between evaluations.
//!
//! Every evaluation runs in a fresh instance, but an instance need not come with a fresh
//! wasmtime store: a store's own set-up (registering the module with it) and teardown
//! (dropping it, which gives its instances' slots back to the pool and resets their memory)
//! are a tenth of the code a review runs, and behind a busy API server every line of it is
//! fetched from memory again. So a store serves [`Limits::evaluations_per_store`] evaluations,
//! each in an instance of its own, and is dropped after the last, its instances with it: the
//! teardown's code is then fetched once for all of them.
//!
//! What a kept store shares between evaluations is host-side only: the instances never see
//! each other (a policy imports nothing, and the host calls each instance's own exports), and
//! every evaluation's instance starts from the module's image (or its configured memory), as
//! it would in a store of its own. A store whose guest trapped, ran out of time or memory, or
//! failed to instantiate is not kept. An idle kept store holds no [`Running`] guard, so the
//! epoch thread sleeps as it would without it.
//!
//! [`Limits::evaluations_per_store`]: crate::Limits::evaluations_per_store
//! [`Running`]: crate::engine::Running

use crate::policy::StoreState;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use wasmtime::{AsContext, AsContextMut, Store, StoreContext, StoreContextMut};

/// The stores waiting for their next evaluation.
pub(crate) struct StorePool {
    kept: Mutex<Kept>,
    /// Evaluations (instances) one store serves; 1: a store per evaluation, none kept.
    per_store: u32,
    /// Idle stores kept at most; more are dropped when they come back.
    max_idle: usize,
}

/// The stores that may be kept: those idle here and those taken from here and still in use.
/// At most `max_idle` of them exist at once, so the instances they hold between evaluations
/// never take more than [`StorePool::kept_slots`] of the instance pool.
#[derive(Default)]
struct Kept {
    idle: Vec<(Store<StoreState>, u32)>,
    /// Idle stores and stores taken from `idle` or made keepable, not yet back or dropped.
    owned: usize,
}

impl StorePool {
    pub(crate) fn new(per_store: u32, max_idle: u32) -> Arc<Self> {
        let per_store = per_store.max(1);
        Arc::new(StorePool {
            kept: Mutex::new(Kept::default()),
            per_store,
            max_idle: if per_store == 1 { 0 } else { max_idle as usize },
        })
    }

    /// Instance slots the kept stores may hold between evaluations: the pool's size on top of
    /// the evaluations in flight.
    pub(crate) fn kept_slots(&self) -> u32 {
        (self.max_idle as u32).saturating_mul(self.per_store - 1)
    }

    /// A kept store with room for another instance, if there is one.
    pub(crate) fn take(self: &Arc<Self>) -> Option<PooledStore> {
        if self.max_idle == 0 {
            return None;
        }
        let (store, instances) = self.kept.lock().unwrap().idle.pop()?;
        Some(PooledStore {
            store: ManuallyDrop::new(store),
            pool: self.clone(),
            instances,
            keep: true,
        })
    }

    /// A new store: kept after its evaluation if fewer than `max_idle` stores may be kept
    /// now, else dropped with it.
    pub(crate) fn wrap(self: &Arc<Self>, store: Store<StoreState>) -> PooledStore {
        let keep = self.max_idle > 0 && {
            let mut kept = self.kept.lock().unwrap();
            let room = kept.owned < self.max_idle;
            kept.owned += room as usize;
            room
        };
        PooledStore {
            store: ManuallyDrop::new(store),
            pool: self.clone(),
            instances: 0,
            keep,
        }
    }

    /// Idle stores now (tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.kept.lock().unwrap().idle.len()
    }
}

/// A store in use by one evaluation (or one load-time call). Dropped, it goes back to its
/// pool if it is sound and has served fewer than its evaluations; otherwise it is dropped
/// with its instances.
pub(crate) struct PooledStore {
    store: ManuallyDrop<Store<StoreState>>,
    pool: Arc<StorePool>,
    /// Instances made in this store so far.
    instances: u32,
    /// Whether it goes back to the pool after this evaluation; `false` for a store beyond the
    /// pool's count, and once a call in it failed other than by the policy's own verdict.
    keep: bool,
}

impl PooledStore {
    /// Counts an instance made in this store.
    pub(crate) fn instantiated(&mut self) {
        self.instances += 1;
    }

    /// A call in this store trapped, ran out of time or memory, or could not start: the
    /// store is dropped after this evaluation rather than kept.
    pub(crate) fn failed(&mut self) {
        if self.keep {
            self.keep = false;
            self.pool.kept.lock().unwrap().owned -= 1;
        }
    }
}

impl AsContext for PooledStore {
    type Data = StoreState;
    fn as_context(&self) -> StoreContext<'_, StoreState> {
        self.store.as_context()
    }
}

impl AsContextMut for PooledStore {
    fn as_context_mut(&mut self) -> StoreContextMut<'_, StoreState> {
        self.store.as_context_mut()
    }
}

impl Deref for PooledStore {
    type Target = Store<StoreState>;
    fn deref(&self) -> &Store<StoreState> {
        &self.store
    }
}

impl DerefMut for PooledStore {
    fn deref_mut(&mut self) -> &mut Store<StoreState> {
        &mut self.store
    }
}

impl Drop for PooledStore {
    fn drop(&mut self) {
        // SAFETY: `store` is taken once, here, and not used after.
        let mut store = unsafe { ManuallyDrop::take(&mut self.store) };
        if !self.keep {
            return;
        }
        if self.instances >= self.pool.per_store {
            self.pool.kept.lock().unwrap().owned -= 1;
            return;
        }
        // Idle, it must not keep the epoch thread awake.
        store.data_mut().idle();
        self.pool
            .kept
            .lock()
            .unwrap()
            .idle
            .push((store, self.instances));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Runtime};

    fn store(runtime: &Runtime) -> Store<StoreState> {
        Store::new(runtime.engine(), StoreState::idle_state())
    }

    /// One evaluation's use of `store`, which then goes back or is dropped.
    fn serve(mut store: PooledStore) {
        store.instantiated();
    }

    #[test]
    fn a_store_serves_its_evaluations_then_is_dropped() {
        let runtime = Runtime::new(Limits::default(), None).unwrap();
        let pool = StorePool::new(3, 1);
        serve(pool.wrap(store(&runtime)));
        assert_eq!(pool.idle(), 1);
        serve(pool.take().expect("kept"));
        serve(pool.take().expect("kept"));
        assert_eq!(pool.idle(), 0, "a store that served 3 of 3 is dropped");
        assert!(pool.take().is_none());
    }

    #[test]
    fn a_failed_store_is_not_kept_nor_more_than_the_pool_holds() {
        let runtime = Runtime::new(Limits::default(), None).unwrap();
        let pool = StorePool::new(8, 1);
        let mut failed = pool.wrap(store(&runtime));
        failed.instantiated();
        failed.failed();
        drop(failed);
        assert_eq!(pool.idle(), 0);
        let (a, b) = (pool.wrap(store(&runtime)), pool.wrap(store(&runtime)));
        serve(a);
        serve(b);
        assert_eq!(pool.idle(), 1, "at most max_idle are kept");
        // The kept one, taken and in use, still counts: a new store is not kept meanwhile.
        let taken = pool.take().expect("kept");
        serve(pool.wrap(store(&runtime)));
        assert_eq!(pool.idle(), 0);
        serve(taken);
        assert_eq!(pool.idle(), 1);
        let none = StorePool::new(1, 4);
        drop(none.wrap(store(&runtime)));
        assert_eq!(none.idle(), 0, "one evaluation per store keeps none");
        assert_eq!(none.kept_slots(), 0);
        assert_eq!(StorePool::new(8, 2).kept_slots(), 14);
    }

    /// After an evaluation its store waits in the pool, and holds no guard that would keep
    /// the epoch thread awake (issue 24: nothing ticks while idle).
    #[test]
    fn a_kept_store_keeps_no_evaluation_running() {
        use crate::{Decision, PolicySet, PolicySources, Subject};
        let runtime = Runtime::new(Limits::default(), None).unwrap();
        let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
        let set = PolicySet::build(&runtime, &sources).unwrap();
        let raw = serde_json::value::RawValue::from_string(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"CODEXK8S_BUILD_REF":"-b x"}}"#.into(),
        )
        .unwrap();
        let subject = Subject::from_manifest(&raw, ck8s_policy_api::Operation::Create).unwrap();
        for _ in 0..3 {
            assert!(!Decision::from_evaluation(&set.evaluate(&subject)).allowed);
        }
        assert_eq!(
            runtime.stores().idle(),
            1,
            "one store serves evaluations in a row"
        );
        assert_eq!(runtime.ticker().unwrap().running_now(), 0);
    }
}
