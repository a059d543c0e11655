//! `piste serve` and `piste runner` as real processes: a real bare repository served by
//! `git daemon` on loopback, webhooks signed as the forges sign them, runners killed and
//! servers restarted mid-pipeline.

mod access;
mod approval;
mod at_rest;
mod auto_cancel;
mod both_ways;
mod browser;
mod cross_needs;
mod delivery;
mod dispatch;
mod downstream;
mod failures;
mod forge;
mod id_tokens;
mod includes;
mod job_page;
mod keywords;
mod limits;
mod login;
mod logs;
mod moto;
mod mr_changes;
mod operator_log;
mod pkce;
mod readme;
mod reports;
mod resource_group;
mod reuse;
mod secrets;
mod services;
mod steps;
mod storage;
mod submodules;
mod support;
mod tls_proxy;
mod transport;

#[path = "../../server/tests/common/https.rs"]
mod https_forge;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../../server/tests/common/tls.rs"]
mod tls_ca;
