-- DiffScans' default base: the newest completed scan of a host (hostname
-- and port) of one type below an id, read as one index range.
CREATE INDEX scans_host_completed_idx ON scans (hostname, port, scan_type, id DESC)
    WHERE status = 'completed';
