//! diesel table definitions, matching `migrations/`.

diesel::table! {
    scans (id) {
        id -> Int8,
        hostname -> Text,
        port -> Int4,
        username -> Text,
        scan_type -> Text,
        status -> Text,
        progress -> Int4,
        current_step -> Text,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        results -> Nullable<Jsonb>,
        error_kind -> Nullable<Text>,
        error_message -> Nullable<Text>,
        request_id -> Nullable<Text>,
        sequence -> Int8,
        attempts -> Int4,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        cancel_requested -> Bool,
        proxy_jump -> Text,
    }
}

diesel::table! {
    ssh_host_keys (hostname, port) {
        hostname -> Text,
        port -> Int4,
        algorithm -> Text,
        public_key -> Text,
        fingerprint -> Text,
        first_seen -> Timestamptz,
    }
}
