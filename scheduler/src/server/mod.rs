//! `piste serve`: the HTTP server, the engine driven from the store, the queue and leases.
