-- One row per host (hostname, port) ever scanned, kept up to date by the
-- statements that create and finish its scans, so that ListHosts and
-- retention never scan the whole scans table. As in PostgreSQL.
CREATE TABLE hosts (
    hostname           TEXT    NOT NULL,
    port               INTEGER NOT NULL,
    last_scan_id       INTEGER NOT NULL,
    completed_scan_id  INTEGER,
    completed_at       INTEGER,
    completed_type     TEXT,
    os_id              TEXT,
    os_pretty_name     TEXT,
    kernel             TEXT,
    package_count      INTEGER,
    step_error_count   INTEGER,
    PRIMARY KEY (hostname, port)
) STRICT;
CREATE UNIQUE INDEX hosts_last_scan_idx ON hosts (last_scan_id DESC);
CREATE INDEX hosts_completed_scan_idx ON hosts (completed_scan_id);
CREATE INDEX hosts_os_idx ON hosts (os_id, last_scan_id DESC);

CREATE INDEX scans_completed_at_idx ON scans (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

INSERT INTO hosts (hostname, port, last_scan_id)
    SELECT hostname, port, max(id) FROM scans GROUP BY hostname, port;
UPDATE hosts SET (completed_scan_id, completed_at, completed_type, os_id, os_pretty_name,
                  kernel, package_count, step_error_count) =
    (SELECT s.id, s.completed_at, s.scan_type, s.results ->> '$.os.id',
            s.results ->> '$.os.pretty_name', s.results ->> '$.os.kernel',
            s.results ->> '$.packages.count',
            coalesce(json_array_length(s.results, '$.step_errors'), 0)
       FROM scans s
      WHERE s.hostname = hosts.hostname AND s.port = hosts.port AND s.status = 'completed'
      ORDER BY s.id DESC LIMIT 1)
 WHERE EXISTS (SELECT 1 FROM scans s WHERE s.hostname = hosts.hostname
                 AND s.port = hosts.port AND s.status = 'completed');
