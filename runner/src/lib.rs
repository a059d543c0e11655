//! Build-node side of piste.

pub mod agent;
pub mod artifacts;
pub mod cache;
pub mod cas;
/// dotenv reports are parsed by the server too: the parser lives in `pipeline-spec`.
pub use pipeline_spec::dotenv;
pub mod executor;
pub mod follow;
pub mod gitinfo;
pub mod includes;
pub mod job;
pub mod joblog;
pub mod leaks;
pub mod local;
pub mod mask;
pub mod oci;
pub mod reuse;
pub mod run;
pub mod steps;
pub mod workspace;
