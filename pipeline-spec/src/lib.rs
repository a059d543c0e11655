//! GitLab CI YAML → validated pipeline → plan (DAG).
//!
//! Pure library: no filesystem, network or async runtime. Included files reach the loader only
//! through the [`IncludeResolver`] trait the caller provides.

pub mod expand;
pub mod expr;
pub mod predefined;
