-- The embedded database's schema: the same tables as PostgreSQL's, in
-- SQLite's types. Timestamps are INTEGER microseconds since the Unix epoch
-- (UTC); results are JSON text. No triggers: SQLite serves one replica.
CREATE TABLE scans (
    -- AUTOINCREMENT: ids are never reused, so keyset pages stay stable.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname         TEXT    NOT NULL,
    port             INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username         TEXT    NOT NULL,
    scan_type        TEXT    NOT NULL CHECK (scan_type IN ('quick', 'full')),
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    progress         INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    current_step     TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    completed_at     INTEGER,
    results          TEXT,
    error_kind       TEXT,
    error_message    TEXT,
    -- Idempotency key of StartScan; NULL when the client gave none.
    request_id       TEXT    UNIQUE,
    -- Per-scan event sequence, bumped by every UPDATE that changes what a watcher sees.
    sequence         INTEGER NOT NULL DEFAULT 1,
    -- How many times a worker claimed it.
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1))
) STRICT;

-- Claim: oldest pending first.
CREATE INDEX scans_pending_idx ON scans (id) WHERE status = 'pending';
-- Lease recovery.
CREATE INDEX scans_running_lease_idx ON scans (lease_expires_at) WHERE status = 'running';
-- ListScans filters, newest first (the primary key serves the unfiltered list).
CREATE INDEX scans_hostname_idx ON scans (hostname, id DESC);
CREATE INDEX scans_status_idx ON scans (status, id DESC);

-- Trust-on-first-use host key pins.
CREATE TABLE ssh_host_keys (
    hostname    TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    algorithm   TEXT    NOT NULL,
    -- OpenSSH public key line: "<type> <base64>".
    public_key  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (hostname, port)
) STRICT;
