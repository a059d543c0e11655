//! `piste serve` and `piste runner` as real processes: a real bare repository served by
//! `git daemon` on loopback, webhooks signed as the forges sign them, runners killed and
//! servers restarted mid-pipeline.

mod both_ways;
mod browser;
mod delivery;
mod failures;
mod forge;
mod logs;
mod moto;
mod operator_log;
mod readme;
mod reports;
mod secrets;
mod storage;
mod support;
