//! The CLI's side of the API: the local agent's socket (root-only, in its data dir), or any
//! node over QUIC with a client bundle (`--host`, `--bundle`). Blocking, one request per call.

use std::{
    io::{Read, Write},
    net::{SocketAddr, ToSocketAddrs},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::agent::{
    datadir::socket_path,
    framing,
    tls::{ca::ClientBundle, cluster, SERVER_NAME},
};
use shoal_core::api::{self, Request, Response};

/// Where the CLI's requests go when they do not go to the local agent.
#[derive(Debug, Clone)]
pub struct Remote {
    /// A node's QUIC address (its gossip port + 1).
    pub addr: SocketAddr,
    /// The client bundle file (`shoal cluster client-bundle NAME > FILE`).
    pub bundle: PathBuf,
}

static REMOTE: OnceLock<Remote> = OnceLock::new();

/// The gossip port a `--host` without a port means.
const DEFAULT_PORT: u16 = 7946;

/// Sends every request of this process to the node at `host` (`ADDR[:PORT]`, PORT being its
/// gossip port), authenticated with the client bundle at `bundle`.
pub fn use_remote(host: &str, bundle: Option<PathBuf>) -> anyhow::Result<()> {
    let bundle = bundle.context(
        "--host needs a client bundle: --bundle FILE (or SHOAL_BUNDLE); \
         `shoal cluster client-bundle NAME > FILE` on a member issues one",
    )?;
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_PORT}")
    };
    let gossip = with_port
        .to_socket_addrs()
        .with_context(|| format!("--host {host}: cannot resolve"))?
        .next()
        .with_context(|| format!("--host {host}: resolves to no address"))?;
    let addr = SocketAddr::new(gossip.ip(), gossip.port().wrapping_add(1));
    let _ = REMOTE.set(Remote { addr, bundle });
    Ok(())
}

/// Sends `request` to the agent owning `data_dir` (or to the remote node, with `--host`) and
/// returns its answer.
pub fn call(data_dir: &Path, request: Request) -> anyhow::Result<Response> {
    let response = match REMOTE.get() {
        Some(remote) => call_remote(remote, request)?,
        None => call_local(data_dir, request)?,
    };
    if let Response::Error(message) = response {
        bail!("{message}");
    }
    Ok(response)
}

fn call_remote(remote: &Remote, request: Request) -> anyhow::Result<Response> {
    let text = std::fs::read_to_string(&remote.bundle)
        .with_context(|| format!("reading the client bundle {}", remote.bundle.display()))?;
    let bundle = ClientBundle::from_pem(&text)
        .with_context(|| format!("{} is not a shoal client bundle", remote.bundle.display()))?;
    let tls = cluster::cli_client_config(&bundle)?;
    let config = cluster::quic_client_config(tls)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = remote.addr;
    runtime.block_on(async move {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let endpoint = quinn::Endpoint::client(bind)?;
        let exchange = async {
            let connection = endpoint
                .connect_with(config, addr, SERVER_NAME)?
                .await
                .with_context(|| {
                    format!("cannot reach a shoal node at {addr} with this bundle (refused, or no agent there)")
                })?;
            let (mut send, mut recv) = connection.open_bi().await?;
            framing::write(&mut send, request).await?;
            send.finish()?;
            let response = framing::read::<Response, _>(&mut recv)
                .await?
                .context("the node closed the connection without answering")?;
            connection.close(0u32.into(), b"done");
            anyhow::Ok(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{addr} did not answer within 60 s"))??;
        endpoint.wait_idle().await;
        Ok(response)
    })
}

fn call_local(data_dir: &Path, request: Request) -> anyhow::Result<Response> {
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
    Ok(api::unframe(&body)?)
}
