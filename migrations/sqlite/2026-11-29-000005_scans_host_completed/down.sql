DROP INDEX scans_host_completed_idx;
