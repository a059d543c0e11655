//! Build-node side of piste.

pub mod artifacts;
pub mod cas;
pub mod executor;
pub mod gitinfo;
pub mod includes;
pub mod local;
pub mod mask;
