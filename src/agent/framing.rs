//! Length-prefixed frames over any async byte stream (the API socket, QUIC streams).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use shoal_core::api::{self, FrameError};

/// Reads one frame and decodes it; `Ok(None)` on a clean end of stream.
pub async fn read<T, S>(stream: &mut S) -> Result<Option<T>, FrameError>
where
    T: serde::de::DeserializeOwned,
    S: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = api::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    api::unframe(&body).map(Some)
}

/// Encodes and writes one frame.
pub async fn write<T, S>(stream: &mut S, body: T) -> Result<(), FrameError>
where
    T: serde::Serialize,
    S: AsyncWrite + Unpin,
{
    let bytes = api::frame(body)?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    Ok(())
}
