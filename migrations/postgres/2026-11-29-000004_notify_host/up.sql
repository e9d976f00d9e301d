-- Event payloads also carry the scan's type and host, so that other
-- replicas can filter WatchScans subscribers without reading the row:
-- "id sequence status progress origin scan_type hostname current_step";
-- a new scan's "id origin scan_type hostname" is its first event.
CREATE OR REPLACE FUNCTION hostscan_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    origin TEXT := coalesce(current_setting('hostscan.instance', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('hostscan_pending', NEW.id::text || ' ' || origin || ' '
            || NEW.scan_type || ' ' || NEW.hostname);
        RETURN NEW;
    END IF;
    IF NEW.sequence <> OLD.sequence THEN
        PERFORM pg_notify('hostscan_events', NEW.id::text || ' ' || NEW.sequence::text || ' '
            || NEW.status || ' ' || NEW.progress::text || ' ' || origin || ' '
            || NEW.scan_type || ' ' || NEW.hostname || ' ' || NEW.current_step);
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
