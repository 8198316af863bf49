//! Byte encodings a driver may use to store checker keys and values in a byte KV store.
//!
//! A stored value is a sequence of 8-byte little-endian `u64`s: one for a register or a
//! counter, the whole list for a list. Appending is concatenation.

use crate::history::{Key, Value};

/// A value that is never written by the generators; executors may report it for a stored
/// value they cannot decode, and the checker then flags a garbage read.
pub const GARBAGE: Value = u64::MAX;

/// A stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length is not a multiple of 8.
    #[error("stored value of {0} bytes is not a sequence of 8-byte values")]
    BadLength(usize),
}

/// The bytes of a key: `b"chk/"` followed by the key in big-endian order.
pub fn encode_key(key: Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(b"chk/");
    out.extend_from_slice(&key.to_be_bytes());
    out
}

/// The bytes of a sequence of values (a register or counter is a sequence of one).
pub fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for &v in values {
        append_value(&mut out, v);
    }
    out
}

/// Appends one value to an encoded list.
pub fn append_value(buf: &mut Vec<u8>, value: Value) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Decodes a stored value into its sequence of values.
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Value>, CodecError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(CodecError::BadLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_length() {
        let mut b = encode_values(&[1, 2]);
        append_value(&mut b, 3);
        assert_eq!(decode_values(&b), Ok(vec![1, 2, 3]));
        assert_eq!(decode_values(&[]), Ok(vec![]));
        assert_eq!(decode_values(&b[..5]), Err(CodecError::BadLength(5)));
        assert_ne!(encode_key(1), encode_key(256));
    }
}
