//! GitLab CI YAML → validated pipeline → plan (DAG).
//!
//! Pure library: no filesystem, network or async runtime. Included files reach the loader only
//! through the [`include::IncludeResolver`] trait the caller provides.
//!
//! The stages, in order: [`yaml`] (text → positioned nodes), [`include`] (merge included
//! files), [`resolve`] (`extends`, then `!reference`), [`parse`] (typed [`model::Pipeline`] with
//! diagnostics), [`plan`] (rules for one trigger → [`plan::Plan`], a checked DAG).
//! [`load::load`] runs the first four.

// Diagnostics are this crate's product and are built on cold paths only; boxing them would
// add noise to every signature for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod child;
pub mod coverage;
pub mod diag;
pub mod dotenv;
pub mod duration;
pub mod expand;
pub mod expr;
pub mod glob;
pub mod include;
mod inputs;
pub mod load;
pub mod merge;
pub mod model;
pub mod parse;
pub mod plan;
pub mod predefined;
pub mod render;
pub mod resolve;
pub mod source;
pub mod steps;
mod use_sites;
pub mod yaml;
