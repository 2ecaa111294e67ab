//! The built-in policies as one bundle module (see `ck8s_policy_sdk::export_policies!`): the
//! host evaluates all three in one fresh instance per request and the guest decodes the input
//! once, instead of three instances and three decodes. Each policy is still its own crate,
//! tested on its own, and also built as a module of its own.

ck8s_policy_sdk::export_policies!(
    ck8s_policy_build_ref::BuildRef,
    ck8s_policy_legacy_labels::LegacyLabels,
    ck8s_policy_kaniko_cache::KanikoCache,
);
