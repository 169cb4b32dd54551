//! The local API: a Unix socket in the data dir, mode 0600, through which the CLI on this host
//! talks to its agent. Each request is handed to the node loop, which owns all state.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};
use tracing::{debug, Instrument};

use super::{framing, shell::Command};
use shoal_core::api::{Request, Response};

/// Binds the API socket, refusing to steal it from a live agent.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another agent already serves {} (one agent per data dir)",
                    path.display()
                ),
            ));
        }
        // A socket left by a killed agent.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// CLI connections served at once; beyond that a connection is answered with an error and
/// closed, so a runaway script cannot exhaust the agent.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request (or sit idle between requests).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts CLI connections until the node loop goes away.
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = format!("the agent serves {MAX_CONNECTIONS} CLI connections already");
                let _ = framing::write(&mut stream, Response::Error(busy)).await;
            });
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(
            async move {
                if let Err(e) = handle(stream, commands).await {
                    debug!(error = %e, "api connection ended with an error");
                }
                drop(slot);
            }
            .in_current_span(),
        );
    }
}

async fn handle(mut stream: UnixStream, commands: mpsc::Sender<Command>) -> anyhow::Result<()> {
    loop {
        let read = tokio::time::timeout(READ_TIMEOUT, framing::read(&mut stream)).await;
        let request: Request = match read {
            Err(_) => return Ok(()),
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                // Tell the client what was wrong with its message before hanging up.
                framing::write(&mut stream, Response::Error(e.to_string())).await?;
                return Ok(());
            }
        };
        let (reply, answer) = oneshot::channel();
        commands.send(Command::Api { request, reply }).await?;
        let response = answer
            .await
            .unwrap_or_else(|_| Response::Error("agent is shutting down".into()));
        if let Err(e) = framing::write(&mut stream, response).await {
            // Say why rather than hang up: an answer that cannot be encoded is our bug.
            let message = format!("the agent could not send its answer: {e}");
            framing::write(&mut stream, Response::Error(message)).await?;
        }
    }
}
