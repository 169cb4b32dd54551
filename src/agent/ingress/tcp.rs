//! Layer 4: each connection goes, whole, to one ready replica.

use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use shoal_core::desired::spec::Protocol;
use shoal_core::routing::routes::Route;

/// Connects `client` to a replica of `route` and copies bytes both ways until either side closes.
/// With no replica reachable the client's connection is closed at once.
pub(super) async fn forward(mut client: TcpStream, port: u16, route: &Route, shared: &Shared) {
    let Some((mut upstream, backend)) = shared.connect((Protocol::Tcp, port), route).await else {
        debug!(service = %route.service, "ingress: no ready replica; closing the connection");
        return;
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => debug!(task = %backend.task_id, up, down, "ingress: connection done"),
        Err(e) => debug!(task = %backend.task_id, error = %e, "ingress: connection ended"),
    }
}
