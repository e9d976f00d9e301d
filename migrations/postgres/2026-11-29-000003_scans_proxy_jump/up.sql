-- Jump hosts a scan goes through, as requested (OpenSSH ProxyJump syntax);
-- '' when the request named none.
ALTER TABLE scans ADD COLUMN proxy_jump TEXT NOT NULL DEFAULT '';
