//! The protobuf codec of the hostscan service: prost, with a small initial
//! encode buffer. tonic keeps one per open stream, and a WatchScan stream
//! mostly sends small events; the buffer grows for the terminal one.
//!
//! A request that is not valid protobuf for its type (a string field whose
//! bytes are not UTF-8, a truncated varint) is the caller's error:
//! INVALID_ARGUMENT naming the field, as every other invalid request,
//! where tonic's own decoder says INTERNAL.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic_prost::ProstEncoder;

const ENCODE_BUFFER: usize = 1024;
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The codec `build.rs` names for every generated service and client:
/// encodes `T`, decodes `U`.
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(PhantomData)
    }
}

/// prost's decoding, with the status a bad message deserves: the server
/// decodes requests (`*Request`, AIP-131), so an undecodable one is
/// INVALID_ARGUMENT; our own client decodes responses, and a response
/// it cannot decode is the server's fault, INTERNAL as in tonic.
#[derive(Debug)]
pub struct Decoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let type_name = std::any::type_name::<U>();
            if type_name.ends_with("Request") {
                Status::invalid_argument(decode_error_message(&e.to_string()))
            } else {
                Status::internal(e.to_string())
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// prost's "failed to decode Protobuf message: Inner.field: Outer.inner:
/// invalid string value: …" (innermost field first) as our
/// INVALID_ARGUMENT shape, "inner.field: not valid protobuf: invalid
/// string value: …"; "request: …" when no field is to blame (a
/// truncated message).
pub(crate) fn decode_error_message(prost_message: &str) -> String {
    let mut rest = prost_message
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(prost_message);
    let mut path = Vec::new();
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let word =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(word(message) && word(field)) {
            break;
        }
        path.push(field);
        rest = tail;
    }
    path.reverse();
    let field = if path.is_empty() {
        "request".to_string()
    } else {
        path.join(".")
    };
    format!("{field}: not valid protobuf: {rest}")
}

#[cfg(test)]
mod tests {
    use super::decode_error_message;

    #[test]
    fn decode_errors_name_the_field_path() {
        assert_eq!(
            decode_error_message(
                "failed to decode Protobuf message: StartScanRequest.hostname: \
                 invalid string value: data is not UTF-8 encoded"
            ),
            "hostname: not valid protobuf: invalid string value: data is not UTF-8 encoded"
        );
        assert_eq!(
            decode_error_message(
                "failed to decode Protobuf message: Timestamp.seconds: \
                 ListScansRequest.created_after: invalid varint"
            ),
            "created_after.seconds: not valid protobuf: invalid varint"
        );
        assert_eq!(
            decode_error_message("failed to decode Protobuf message: buffer underflow"),
            "request: not valid protobuf: buffer underflow"
        );
        assert_eq!(decode_error_message(""), "request: not valid protobuf: ");
    }
}
