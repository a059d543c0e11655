//! `piste runner`: registration and the job loop on a build node.
