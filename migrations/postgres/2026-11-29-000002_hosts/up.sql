-- One row per host (hostname, port) ever scanned, kept up to date by the
-- statements that create and finish its scans, so that ListHosts and
-- retention never scan the whole scans table.
CREATE TABLE hosts (
    hostname           TEXT        NOT NULL,
    port               INTEGER     NOT NULL,
    -- The newest scan of this host (any status): ListHosts orders by it,
    -- newest first, and reads its status from scans.
    last_scan_id       BIGINT      NOT NULL,
    -- The newest COMPLETED scan and its summary; NULL until one completes.
    completed_scan_id  BIGINT,
    completed_at       TIMESTAMPTZ,
    completed_type     TEXT,
    os_id              TEXT,
    os_pretty_name     TEXT,
    kernel             TEXT,
    -- NULL when the completed scan had no package step (a quick scan).
    package_count      BIGINT,
    step_error_count   INTEGER,
    PRIMARY KEY (hostname, port)
);
CREATE UNIQUE INDEX hosts_last_scan_idx ON hosts (last_scan_id DESC);
CREATE INDEX hosts_completed_scan_idx ON hosts (completed_scan_id);
CREATE INDEX hosts_os_idx ON hosts (os_id, last_scan_id DESC);

-- Retention: terminal scans by age.
CREATE INDEX scans_completed_at_idx ON scans (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Hosts of the scans that exist already.
INSERT INTO hosts (hostname, port, last_scan_id)
    SELECT hostname, port, max(id) FROM scans GROUP BY hostname, port;
UPDATE hosts h SET completed_scan_id = s.id, completed_at = s.completed_at,
       completed_type = s.scan_type,
       os_id = s.results -> 'os' ->> 'id',
       os_pretty_name = s.results -> 'os' ->> 'pretty_name',
       kernel = s.results -> 'os' ->> 'kernel',
       package_count = (s.results -> 'packages' ->> 'count')::bigint,
       step_error_count = coalesce(jsonb_array_length(s.results -> 'step_errors'), 0)
  FROM (SELECT DISTINCT ON (hostname, port) * FROM scans WHERE status = 'completed'
        ORDER BY hostname, port, id DESC) s
 WHERE h.hostname = s.hostname AND h.port = s.port;
