//! Build-node side of piste.
