//! Typed 32-byte object ids.
//!
//! A chunk id is not a pack id is not a snapshot id: each kind of object gets its own type so the
//! compiler catches the mix-ups that would corrupt a repository. All ids print as 64 lowercase hex
//! digits, which is also how they appear in object keys and JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lowercase hex of `bytes`. The `hex` crate's encoder builds its string a char at a time, which
/// showed in no-change backups (every id of the files cache, every cache key, written and read).
pub fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The id could not be parsed from text.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an object id (expected 64 hex digits)")]
pub struct ParseIdError(pub String);

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex_string(&self.0)
            }

            /// The first 8 hex digits, as shown to people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a chunk's type tag and plaintext: names data and tree chunks.
    ChunkId
);
typed_id!(
    /// Plain BLAKE3 of a pack's stored (encrypted) bytes.
    PackId
);
typed_id!(
    /// Keyed BLAKE3 of an index object's plaintext.
    IndexId
);
typed_id!(
    /// Keyed BLAKE3 of a snapshot object's plaintext.
    SnapshotId
);
typed_id!(
    /// Plain BLAKE3 of a key file's bytes.
    KeyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId([7; 32]);
        let parsed: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("zz".parse::<ChunkId>().is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", id.to_hex())
        );
    }

    #[test]
    fn hex_string_is_lowercase_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_string(&bytes), hex::encode(&bytes));
        assert_eq!(hex_string(&[]), "");
    }
}
