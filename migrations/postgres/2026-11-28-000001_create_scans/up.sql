-- Scans: one row per requested scan, written by the API (create, cancel) and
-- by the worker holding the row's lease (progress, finish).
CREATE TABLE scans (
    id               BIGSERIAL PRIMARY KEY,
    hostname         TEXT        NOT NULL,
    port             INTEGER     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username         TEXT        NOT NULL,
    scan_type        TEXT        NOT NULL CHECK (scan_type IN ('quick', 'full')),
    status           TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    progress         INTEGER     NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    current_step     TEXT        NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    results          JSONB,
    error_kind       TEXT,
    error_message    TEXT,
    -- Idempotency key of StartScan; NULL when the client gave none.
    request_id       TEXT        UNIQUE,
    -- Per-scan event sequence, bumped by every UPDATE that changes what a watcher sees.
    sequence         BIGINT      NOT NULL DEFAULT 1,
    -- How many times a worker claimed it.
    attempts         INTEGER     NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    cancel_requested BOOLEAN     NOT NULL DEFAULT false
);

-- Claim: oldest pending first.
CREATE INDEX scans_pending_idx ON scans (id) WHERE status = 'pending';
-- Lease recovery.
CREATE INDEX scans_running_lease_idx ON scans (lease_expires_at) WHERE status = 'running';
-- ListScans filters, newest first (the primary key serves the unfiltered list).
CREATE INDEX scans_hostname_idx ON scans (hostname, id DESC);
CREATE INDEX scans_status_idx ON scans (status, id DESC);

-- Trust-on-first-use host key pins, shared by every replica.
CREATE TABLE ssh_host_keys (
    hostname    TEXT        NOT NULL,
    port        INTEGER     NOT NULL,
    algorithm   TEXT        NOT NULL,
    -- OpenSSH public key line: "<type> <base64>".
    public_key  TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (hostname, port)
);

-- Cross-replica signals. Payloads carry the writer's instance id (set per
-- pooled connection) so a replica can ignore its own. Event payloads carry
-- the new state ("id sequence status progress origin current_step"), so
-- watchers on other replicas get every change without reading the row.
CREATE FUNCTION hostscan_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    origin TEXT := coalesce(current_setting('hostscan.instance', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('hostscan_pending', NEW.id::text || ' ' || origin);
        RETURN NEW;
    END IF;
    IF NEW.sequence <> OLD.sequence THEN
        PERFORM pg_notify('hostscan_events', NEW.id::text || ' ' || NEW.sequence::text || ' '
            || NEW.status || ' ' || NEW.progress::text || ' ' || origin || ' ' || NEW.current_step);
        IF NEW.status = 'pending' THEN
            PERFORM pg_notify('hostscan_pending', NEW.id::text || ' ' || origin);
        END IF;
    END IF;
    IF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('hostscan_cancel', NEW.id::text || ' ' || origin);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER scans_notify
    AFTER INSERT OR UPDATE ON scans
    FOR EACH ROW EXECUTE FUNCTION hostscan_notify();
