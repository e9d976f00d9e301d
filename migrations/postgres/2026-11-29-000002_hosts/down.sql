DROP INDEX IF EXISTS scans_completed_at_idx;
DROP TABLE IF EXISTS hosts;
