//! The node's data dir: its stable id, process generation, remembered peers, TLS material, the
//! cluster trust material and the local API socket. Every write is atomic and fsynced, so a
//! crash never leaves a torn file, and every file starts with the versioned envelope of
//! [`shoal_core::format`] (files written before it are read as their legacy format).
//!
//! | path | mode | content |
//! |---|---|---|
//! | `node.json` | 0644 | envelope + JSON: node id and last boot generation |
//! | `peers.json` | 0644 | envelope + JSON: gossip addresses for the next start |
//! | `desired.bin` | 0600 | envelope + bincode: the desired state |
//! | `trust/` | 0700 | what makes the node a member (below); a restart needs no token |
//! | `trust/ca.crt` | 0600 | envelope + DER: the cluster CA certificate |
//! | `trust/ca.key` | 0600 | envelope + PKCS#8 DER: the CA key (every member can admit) |
//! | `trust/node.crt` | 0600 | envelope + DER: this node's certificate (written last) |
//! | `trust/node.key` | 0600 | envelope + PKCS#8 DER: this node's key |
//! | `trust/keyring` | 0600 | envelope + bincode: the gossip keyring |
//! | `trust/token` | 0600 | envelope + bincode: the current join secret |
//! | `trust/revoked` | 0600 | envelope + bincode: revoked node ids and serials |

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use shoal_core::{
    format::{self, FileKind, FormatError},
    identity::NodeId,
    seal::Keyring,
    trust::{token::JoinSecret, RevocationSet, SecretBytes},
};

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
            Ok(bytes) => Some(read_json(FileKind::NodeState, &bytes).map_err(|e| {
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
        let file = format::encode_bytes(FileKind::NodeState, &bytes);
        write_atomic(&self.root.join("node.json"), &file, false)
    }

    /// Peers remembered from the last run.
    pub fn load_peers(&self) -> Vec<SocketAddr> {
        fs::read(self.root.join("peers.json"))
            .ok()
            .and_then(|bytes| read_json(FileKind::Peers, &bytes).ok())
            .unwrap_or_default()
    }

    /// Remembers peers for the next start.
    pub fn save_peers(&self, peers: &[SocketAddr]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(peers).expect("addresses serialize");
        let file = format::encode_bytes(FileKind::Peers, &bytes);
        write_atomic(&self.root.join("peers.json"), &file, false)
    }

    /// Where the cluster trust material lives.
    pub fn trust_dir(&self) -> PathBuf {
        self.root.join("trust")
    }

    fn open_trust_dir(&self) -> std::io::Result<PathBuf> {
        let dir = self.trust_dir();
        fs::create_dir_all(&dir)?;
        // Set even when it exists: an operator's copy or an old umask must not leave it open.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(dir)
    }

    /// Persists everything that makes this node a member (after `cluster init`, or once a join
    /// was granted). The node certificate is written last: its presence marks a complete set, so
    /// a crash halfway leaves a node that is simply not joined yet.
    pub fn save_trust(&self, trust: &TrustMaterial) -> std::io::Result<()> {
        let dir = self.open_trust_dir()?;
        let write = |name: &str, kind: FileKind, body: &[u8]| {
            write_atomic(&dir.join(name), &format::encode_bytes(kind, body), true)
        };
        write(TRUST_CA_CERT, FileKind::CaCert, &trust.ca_cert_der)?;
        write(TRUST_CA_KEY, FileKind::CaKey, &trust.ca_key_der.0)?;
        self.save_keyring(&trust.keyring)?;
        self.save_token_secret(&trust.token_secret)?;
        write(TRUST_NODE_KEY, FileKind::NodeKey, &trust.node_key_der.0)?;
        write(TRUST_NODE_CERT, FileKind::NodeCert, &trust.node_cert_der)
    }

    /// Loads the trust material: `None` when this node has not joined a cluster (no node
    /// certificate), an error when the set is incomplete or a file is unreadable.
    pub fn load_trust(&self) -> Result<Option<TrustMaterial>, TrustFileError> {
        let dir = self.trust_dir();
        if read_optional(&dir.join(TRUST_NODE_CERT))?.is_none() {
            return Ok(None);
        }
        Ok(Some(TrustMaterial {
            ca_cert_der: read_body(&dir, TRUST_CA_CERT, FileKind::CaCert)?,
            ca_key_der: SecretBytes(read_body(&dir, TRUST_CA_KEY, FileKind::CaKey)?),
            node_cert_der: read_body(&dir, TRUST_NODE_CERT, FileKind::NodeCert)?,
            node_key_der: SecretBytes(read_body(&dir, TRUST_NODE_KEY, FileKind::NodeKey)?),
            keyring: read_decoded(&dir, TRUST_KEYRING, FileKind::Keyring)?,
            token_secret: read_decoded(&dir, TRUST_TOKEN, FileKind::JoinSecret)?,
        }))
    }

    /// Persists the gossip keyring (after a rotation step).
    pub fn save_keyring(&self, keyring: &Keyring) -> std::io::Result<()> {
        let dir = self.open_trust_dir()?;
        let file = format::encode_file(FileKind::Keyring, keyring).map_err(invalid)?;
        write_atomic(&dir.join(TRUST_KEYRING), &file, true)
    }

    /// Persists the current join secret (after `cluster init` or a token rotation).
    pub fn save_token_secret(&self, secret: &JoinSecret) -> std::io::Result<()> {
        let dir = self.open_trust_dir()?;
        let file = format::encode_file(FileKind::JoinSecret, secret).map_err(invalid)?;
        write_atomic(&dir.join(TRUST_TOKEN), &file, true)
    }

    /// Persists the revocation set.
    pub fn save_revocations(&self, set: &RevocationSet) -> std::io::Result<()> {
        let dir = self.open_trust_dir()?;
        let file = format::encode_file(FileKind::Revocations, set).map_err(invalid)?;
        write_atomic(&dir.join(TRUST_REVOKED), &file, true)
    }

    /// Loads the revocation set (empty when none was saved).
    pub fn load_revocations(&self) -> Result<RevocationSet, TrustFileError> {
        let path = self.trust_dir().join(TRUST_REVOKED);
        match read_optional(&path)? {
            None => Ok(RevocationSet::default()),
            Some(bytes) => format::decode_file(FileKind::Revocations, &bytes)
                .map_err(|source| TrustFileError::Format { path, source }),
        }
    }
}

const TRUST_CA_CERT: &str = "ca.crt";
const TRUST_CA_KEY: &str = "ca.key";
const TRUST_NODE_CERT: &str = "node.crt";
const TRUST_NODE_KEY: &str = "node.key";
const TRUST_KEYRING: &str = "keyring";
const TRUST_TOKEN: &str = "token";
const TRUST_REVOKED: &str = "revoked";

/// Everything that makes a node a member of its cluster, as kept in `trust/`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustMaterial {
    /// The cluster CA certificate (DER).
    pub ca_cert_der: Vec<u8>,
    /// The CA's PKCS#8 private key (DER).
    pub ca_key_der: SecretBytes,
    /// This node's certificate (DER).
    pub node_cert_der: Vec<u8>,
    /// This node's PKCS#8 private key (DER).
    pub node_key_der: SecretBytes,
    /// The gossip keyring.
    pub keyring: Keyring,
    /// The current join secret.
    pub token_secret: JoinSecret,
}

/// Why the trust material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// A file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is unreadable as its kind, or of an unsupported version.
    #[error("{}: {source}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: FormatError,
    },
    /// The node certificate exists but another file of the set does not.
    #[error("{} is missing: the trust material is incomplete (restore it, or leave and join again)", .0.display())]
    Missing(PathBuf),
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TrustFileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TrustFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The body of a required file of the trust set.
fn read_body(dir: &Path, name: &str, kind: FileKind) -> Result<Vec<u8>, TrustFileError> {
    let path = dir.join(name);
    let bytes = read_optional(&path)?.ok_or_else(|| TrustFileError::Missing(path.clone()))?;
    format::decode_bytes(kind, &bytes)
        .map(<[u8]>::to_vec)
        .map_err(|source| TrustFileError::Format { path, source })
}

/// A required bincode file of the trust set, decoded.
fn read_decoded<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    kind: FileKind,
) -> Result<T, TrustFileError> {
    let path = dir.join(name);
    let bytes = read_optional(&path)?.ok_or_else(|| TrustFileError::Missing(path.clone()))?;
    format::decode_file(kind, &bytes).map_err(|source| TrustFileError::Format { path, source })
}

fn invalid(e: FormatError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Reads a JSON file in the envelope, or a legacy one written before it (plain JSON).
fn read_json<T: serde::de::DeserializeOwned>(kind: FileKind, bytes: &[u8]) -> Result<T, String> {
    let json = |b: &[u8]| {
        serde_json::from_slice(b).map_err(|e| shoal_core::wire::WireError::Decode(e.to_string()))
    };
    format::decode_or_legacy(kind, bytes, json, json)
        .map(|decoded| decoded.value)
        .map_err(|e| e.to_string())
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
    fn legacy_json_files_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        // What agents wrote before the envelope: plain JSON.
        let legacy = serde_json::to_vec(&NodeState {
            id: NodeId(42),
            generation: 7,
        })
        .unwrap();
        fs::write(dir.path().join("node.json"), legacy).unwrap();
        fs::write(dir.path().join("peers.json"), br#"["127.0.0.1:7946"]"#).unwrap();
        let state = data.start_generation(0, || NodeId(1)).unwrap();
        assert_eq!((state.id, state.generation), (NodeId(42), 8));
        assert_eq!(data.load_peers().len(), 1);
        // Rewritten in the envelope.
        let bytes = fs::read(dir.path().join("node.json")).unwrap();
        assert_eq!(&bytes[..4], b"SHLF");
    }

    fn sample_trust() -> TrustMaterial {
        TrustMaterial {
            ca_cert_der: vec![1, 2, 3],
            ca_key_der: SecretBytes(vec![4; 40]),
            node_cert_der: vec![5, 6],
            node_key_der: SecretBytes(vec![7; 40]),
            keyring: Keyring::new(1, shoal_core::seal::GossipKey([8; 32])),
            token_secret: JoinSecret([9; 16]),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn trust_material_round_trips_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        assert!(data.load_trust().unwrap().is_none(), "not joined yet");
        let trust = sample_trust();
        data.save_trust(&trust).unwrap();
        // A restart: a fresh handle on the same directory reads it all back, no token needed.
        let again = DataDir::open(dir.path()).unwrap();
        assert_eq!(again.load_trust().unwrap(), Some(trust));
        assert_eq!(mode(&data.trust_dir()), 0o700);
        for name in [
            "ca.crt", "ca.key", "node.crt", "node.key", "keyring", "token",
        ] {
            let path = data.trust_dir().join(name);
            assert_eq!(mode(&path), 0o600, "{name}");
            assert_eq!(&fs::read(&path).unwrap()[..4], b"SHLF", "{name}");
        }
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(data.trust_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn trust_dir_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        fs::create_dir_all(data.trust_dir()).unwrap();
        fs::set_permissions(data.trust_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        data.save_keyring(&sample_trust().keyring).unwrap();
        assert_eq!(mode(&data.trust_dir()), 0o700);
    }

    #[test]
    fn incomplete_or_foreign_trust_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        data.save_trust(&sample_trust()).unwrap();
        fs::remove_file(data.trust_dir().join("ca.key")).unwrap();
        let err = data.load_trust().unwrap_err();
        assert!(matches!(err, TrustFileError::Missing(_)), "{err}");
        assert!(err.to_string().contains("ca.key"));
        data.save_trust(&sample_trust()).unwrap();
        // A node key where the keyring should be: refused by kind, naming the file.
        fs::copy(
            data.trust_dir().join("node.key"),
            data.trust_dir().join("keyring"),
        )
        .unwrap();
        let err = data.load_trust().unwrap_err();
        assert!(matches!(err, TrustFileError::Format { .. }), "{err}");
        assert!(err.to_string().contains("keyring"), "{err}");
    }

    #[test]
    fn revocations_persist() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.load_revocations().unwrap(), RevocationSet::default());
        let mut set = RevocationSet::default();
        set.nodes.insert(NodeId(3));
        set.serials.insert(vec![1, 2]);
        data.save_revocations(&set).unwrap();
        assert_eq!(data.load_revocations().unwrap(), set);
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
