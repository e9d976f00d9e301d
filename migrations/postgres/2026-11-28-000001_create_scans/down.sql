DROP TRIGGER IF EXISTS scans_notify ON scans;
DROP FUNCTION IF EXISTS hostscan_notify();
DROP TABLE IF EXISTS ssh_host_keys;
DROP TABLE IF EXISTS scans;
