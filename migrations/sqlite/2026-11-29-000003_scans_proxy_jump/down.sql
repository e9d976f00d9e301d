ALTER TABLE scans DROP COLUMN proxy_jump;
