//! `hostscan.v1.ScanEvent`, by hand: the one message a server sends to many
//! streams at once. A WatchScan event goes to every watcher of its scan,
//! and a full scan's terminal event carries the whole scan (about 30 KB,
//! some 90 µs to convert and encode in a release build). So an event can be
//! built from bytes encoded once and shared (`ScanEvent::shared`): each
//! watcher's stream then copies bytes instead of converting and encoding.
//!
//! `ScanEventFields` is the message as prost would generate it; a unit test
//! checks it against the proto's descriptor, field by field.

use std::ops::{Deref, DerefMut};

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

use super::{Scan, ScanStatus, ScanType};

/// The fields of `hostscan.v1.ScanEvent` (see the proto for each one's
/// meaning).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ScanEventFields {
    #[prost(int64, tag = "1")]
    pub scan_id: i64,
    /// Per scan, strictly increasing; a heartbeat repeats the last one.
    #[prost(int64, tag = "2")]
    pub sequence: i64,
    #[prost(enumeration = "ScanStatus", tag = "3")]
    pub status: i32,
    #[prost(int32, tag = "4")]
    pub progress: i32,
    #[prost(string, tag = "5")]
    pub current_step: ::prost::alloc::string::String,
    #[prost(message, optional, tag = "6")]
    pub time: ::core::option::Option<::prost_types::Timestamp>,
    /// The whole scan: on the first event of a WatchScan stream, on
    /// WatchScans snapshot events, and on every terminal event.
    #[prost(message, optional, tag = "7")]
    pub scan: ::core::option::Option<Scan>,
    #[prost(bool, tag = "8")]
    pub heartbeat: bool,
    #[prost(string, tag = "9")]
    pub hostname: ::prost::alloc::string::String,
    #[prost(enumeration = "ScanType", tag = "10")]
    pub scan_type: i32,
    #[prost(string, tag = "11")]
    pub resume_token: ::prost::alloc::string::String,
}

/// `hostscan.v1.ScanEvent`: its fields, or the bytes they encode to.
///
/// Read and write the fields through `Deref`/`DerefMut` as with any prost
/// message (writing forgets shared bytes). An event made by `shared` has
/// only bytes: it is for sending, and its fields read as defaults.
#[derive(Clone, Default, PartialEq)]
pub struct ScanEvent {
    fields: ScanEventFields,
    /// The encoded message, shared by every stream that sends it.
    wire: Option<Bytes>,
}

impl ScanEvent {
    /// An event that sends `wire`, the encoding of a `ScanEventFields`.
    pub fn shared(wire: Bytes) -> Self {
        Self {
            fields: ScanEventFields::default(),
            wire: Some(wire),
        }
    }

    /// The fields, taking the event apart.
    pub fn into_fields(self) -> ScanEventFields {
        self.fields
    }
}

impl From<ScanEventFields> for ScanEvent {
    fn from(fields: ScanEventFields) -> Self {
        Self { fields, wire: None }
    }
}

impl Deref for ScanEvent {
    type Target = ScanEventFields;
    fn deref(&self) -> &ScanEventFields {
        &self.fields
    }
}

impl DerefMut for ScanEvent {
    fn deref_mut(&mut self) -> &mut ScanEventFields {
        self.wire = None;
        &mut self.fields
    }
}

impl std::fmt::Debug for ScanEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.wire {
            Some(w) => write!(f, "ScanEvent(<{} shared bytes>)", w.len()),
            None => self.fields.fmt(f),
        }
    }
}

impl prost::Message for ScanEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.wire {
            Some(w) => buf.put_slice(w),
            None => self.fields.encode_raw(buf),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.wire = None;
        self.fields.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match &self.wire {
            Some(w) => w.len(),
            None => self.fields.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_reflect::{DynamicMessage, Value};

    use super::*;

    /// Every field of the proto's ScanEvent, set, survives a trip through
    /// `ScanEventFields`: none missing, none of another type or number.
    #[test]
    fn the_fields_match_the_proto() {
        let desc = super::super::descriptor("hostscan.v1.ScanEvent").expect("descriptor");
        let mut full = DynamicMessage::new(desc.clone());
        for field in desc.fields() {
            let value = match field.kind() {
                prost_reflect::Kind::Int64 => Value::I64(7),
                prost_reflect::Kind::Int32 => Value::I32(7),
                prost_reflect::Kind::Bool => Value::Bool(true),
                prost_reflect::Kind::String => Value::String("x".into()),
                prost_reflect::Kind::Enum(_) => Value::EnumNumber(2),
                prost_reflect::Kind::Message(m) => {
                    let mut inner = DynamicMessage::new(m.clone());
                    if let Some(first) = m.fields().next() {
                        inner.set_field(&first, Value::I64(3));
                    }
                    Value::Message(inner)
                }
                other => panic!("ScanEvent has a field of kind {other:?}: teach this test"),
            };
            full.set_field(&field, value);
        }
        let bytes = full.encode_to_vec();
        let ours = ScanEventFields::decode(bytes.as_slice()).expect("decodes");
        let back = DynamicMessage::decode(desc, ours.encode_to_vec().as_slice()).expect("back");
        assert_eq!(back, full);
    }

    #[test]
    fn shared_bytes_go_out_as_they_are() {
        let fields = ScanEventFields {
            scan_id: 4,
            sequence: 9,
            current_step: "disks".into(),
            ..Default::default()
        };
        let wire = Bytes::from(fields.encode_to_vec());
        let shared = ScanEvent::shared(wire.clone());
        assert_eq!(shared.encode_to_vec(), wire.to_vec());
        assert_eq!(shared.encoded_len(), wire.len());
        let decoded = ScanEvent::decode(wire).expect("decodes");
        assert_eq!(decoded.sequence, 9);
        assert_eq!(decoded.into_fields(), fields);
    }
}
