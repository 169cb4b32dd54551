//! The CLI's side of the local API socket: blocking, one request per call.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::agent::datadir::socket_path;
use shoal_core::api::{self, Request, Response};

/// Sends `request` to the agent owning `data_dir` and returns its answer.
pub fn call(data_dir: &Path, request: Request) -> anyhow::Result<Response> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the agent at {} — is `shoal agent --data-dir {}` running?",
            path.display(),
            data_dir.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&api::frame(request)?)?;
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .context("the agent closed the connection without answering")?;
    let len = api::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let response: Response = api::unframe(&body)?;
    if let Response::Error(message) = response {
        bail!("{message}");
    }
    Ok(response)
}
