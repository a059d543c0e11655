//! End-to-end tests of `runner::oci` against real components: Debian's `docker-registry`
//! (plain, htpasswd Basic auth, token auth with a token server written in `support`),
//! `skopeo` as an independent client, `openssl` to verify signatures, and the Docker Engine
//! (builds with `RUN`, pulls and runs what was pushed). They fail, never skip, when one is
//! missing (`scripts/deps.sh` installs them).

mod auth;
mod engine;
mod native;
mod signing;
mod step;
mod support;
