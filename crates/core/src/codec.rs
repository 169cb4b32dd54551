//! foca's [`Codec`] over shoal's bincode wire format.
//!
//! foca frames a SWIM message as a header followed by a count and that many member updates; this
//! codec encodes each piece with [`crate::wire`]'s limits, so a malicious count or length
//! fails decoding instead of allocating.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member};

use super::{identity::NodeIdentity, wire};

/// The codec every shoal node uses for SWIM messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwimCodec;

/// Encoding or decoding of a SWIM message failed.
#[derive(Debug, thiserror::Error)]
#[error("swim codec: {0}")]
pub struct SwimCodecError(String);

fn put<T: serde::Serialize>(value: &T, buf: impl BufMut) -> Result<(), SwimCodecError> {
    let bytes = wire::encode(value).map_err(|e| SwimCodecError(e.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        return Err(SwimCodecError("buffer full".into()));
    }
    let mut buf = buf;
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, SwimCodecError> {
    // foca always hands us a contiguous slice, so the first chunk is all there is.
    let (value, used) =
        wire::decode_prefix::<T>(buf.chunk()).map_err(|e| SwimCodecError(e.to_string()))?;
    buf.advance(used);
    Ok(value)
}

impl Codec<NodeIdentity> for SwimCodec {
    type Error = SwimCodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, Self::Error> {
        take(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, Self::Error> {
        take(buf)
    }
}
