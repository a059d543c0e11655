//! `piste serve` and `piste runner` as real processes: a real bare repository served by
//! `git daemon` on loopback, webhooks signed as the forges sign them, runners killed and
//! servers restarted mid-pipeline.

mod access;
mod at_rest;
mod both_ways;
mod browser;
mod delivery;
mod failures;
mod forge;
mod job_page;
mod limits;
mod login;
mod logs;
mod moto;
mod operator_log;
mod readme;
mod reports;
mod secrets;
mod steps;
mod storage;
mod support;
mod transport;

#[path = "../../server/tests/common/https.rs"]
mod https_forge;
#[path = "../../server/tests/common/tls.rs"]
mod tls_ca;
