//! The node's data dir: its stable id, process generation, remembered peers, TLS material and the
//! local API socket. Every write is atomic and fsynced, so a crash never leaves a torn file.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use shoal_core::identity::NodeId;

/// The data dir used when none is given: system-wide for root, per-user otherwise.
pub fn default_data_dir() -> PathBuf {
    let is_root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/shoal");
    }
    match std::env::var_os("XDG_DATA_HOME").or_else(|| std::env::var_os("HOME")) {
        Some(base) if std::env::var_os("XDG_DATA_HOME").is_some() => {
            PathBuf::from(base).join("shoal")
        }
        Some(home) => PathBuf::from(home).join(".local/share/shoal"),
        None => PathBuf::from(".shoal"),
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
/// `private` files are created 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Unique per write: two writers of one file must not rename each other's temp file away.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// What makes a node the same node across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Stable id.
    pub id: NodeId,
    /// Generation of the last start; the next start uses a larger one.
    pub generation: u64,
}

/// A node's data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating, mode 0700) the data dir at `root`.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        fs::create_dir_all(root.join("tls"))?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the agent listens for the local CLI.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.root)
    }

    /// Where the desired state is kept.
    pub fn desired_path(&self) -> PathBuf {
        self.root.join("desired.bin")
    }

    /// Where TLS material lives.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Loads the node's id and picks this start's generation: larger than any before, and at
    /// least the wall clock in ms, so that even a wiped node reusing an address outranks the old
    /// process there. Persisted before it is used.
    pub fn start_generation(
        &self,
        now_ms: u64,
        new_id: impl FnOnce() -> NodeId,
    ) -> std::io::Result<NodeState> {
        let path = self.root.join("node.json");
        let previous: Option<NodeState> = match fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let state = match previous {
            Some(prev) => NodeState {
                id: prev.id,
                generation: (prev.generation + 1).max(now_ms),
            },
            None => NodeState {
                id: new_id(),
                generation: now_ms.max(1),
            },
        };
        self.save_state(&state)?;
        Ok(state)
    }

    /// Persists the node state (after a self-renewal bumped the generation).
    pub fn save_state(&self, state: &NodeState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("plain struct serializes");
        write_atomic(&self.root.join("node.json"), &bytes, false)
    }

    /// Peers remembered from the last run.
    pub fn load_peers(&self) -> Vec<SocketAddr> {
        fs::read(self.root.join("peers.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Remembers peers for the next start.
    pub fn save_peers(&self, peers: &[SocketAddr]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(peers).expect("addresses serialize");
        write_atomic(&self.root.join("peers.json"), &bytes, false)
    }
}

/// The API socket inside data dir `root`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("shoal.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_grows_and_id_stays() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let first = data.start_generation(1000, || NodeId(42)).unwrap();
        assert_eq!((first.id, first.generation), (NodeId(42), 1000));
        // A clock that went backwards still yields a larger generation.
        let second = data.start_generation(10, || NodeId(7)).unwrap();
        assert_eq!((second.id, second.generation), (NodeId(42), 1001));
    }

    #[test]
    fn peers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        assert!(data.load_peers().is_empty());
        let peers = vec!["127.0.0.1:7946".parse().unwrap()];
        data.save_peers(&peers).unwrap();
        assert_eq!(data.load_peers(), peers);
    }
}
