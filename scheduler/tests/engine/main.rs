//! Integration tests of the pipeline engine, one module per topic. Most tests drive a pipeline
//! step by step and check a transcript (every event, the commands it produced, and the status
//! of the pipeline and of every job after it) against a reviewed snapshot, plus direct
//! assertions of the rule under test.

mod harness;

mod cancel;
mod delayed;
mod events;
mod invariants;
mod manual;
mod needs;
mod persistence;
mod resource_group;
mod retry;
mod stages;
mod subset;
