-- The key that signs jobs' ID tokens (`id_tokens:`). One row per key name; the first server
-- to start inserts it (`INSERT ... ON CONFLICT DO NOTHING`) and every server then reads the
-- same row, so all the servers sharing a database sign with one key. `pkcs8` is the private
-- key (PKCS#8 DER); `alg` the JWS algorithm it signs with.
CREATE TABLE id_token_keys (
    name TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    pkcs8 BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
