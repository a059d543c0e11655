//! Build-node side of piste.

pub mod artifacts;
pub mod cas;
pub mod mask;
pub mod gitinfo;
pub mod includes;
pub mod local;
