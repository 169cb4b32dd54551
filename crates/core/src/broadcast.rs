//! Opaque payloads piggybacked on SWIM messages (foca custom broadcasts): how small desired-state
//! deltas spread epidemically at gossip speed, without a connection per peer.
//!
//! foca asks a handler whether an item is news (to keep spreading it) or stale (to drop it). An item
//! here is news the first time its hash is seen; what it means is the caller's business, so the
//! handler only queues new items for the node loop to merge. The memory of seen hashes is bounded.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use foca::{BroadcastHandler, Invalidates};
use sha2::{Digest, Sha256};

use super::identity::NodeIdentity;

/// Largest item worth gossiping: a SWIM datagram also carries two identities and some membership
/// updates. Bigger payloads travel over QUIC only.
pub const MAX_BROADCAST_BYTES: usize = 800;

/// How many item hashes are remembered to recognise repeats.
const SEEN_CAPACITY: usize = 8_192;

/// The dissemination key of an item: its hash. Only an identical item replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ItemKey([u8; 32]);

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

/// Never produced: an item is either news or a repeat.
#[derive(Debug, thiserror::Error)]
#[error("broadcast item rejected")]
pub struct BroadcastError;

/// Where new items wait for the node loop. Shared because foca owns the handler and offers no
/// way back to it.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Vec<u8>>>>);

impl Inbox {
    /// Items received from peers since the last call.
    pub fn take(&self) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn push(&self, item: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(item);
        }
    }
}

/// Remembers seen items and queues the new ones for the node.
#[derive(Default)]
pub struct Broadcasts {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    inbox: Inbox,
}

impl Broadcasts {
    /// A handler delivering into `inbox`.
    pub fn new(inbox: Inbox) -> Self {
        Broadcasts {
            inbox,
            ..Default::default()
        }
    }

    fn remember(&mut self, hash: [u8; 32]) -> bool {
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

impl BroadcastHandler<NodeIdentity> for Broadcasts {
    type Key = ItemKey;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<ItemKey>, BroadcastError> {
        let hash: [u8; 32] = Sha256::digest(data).into();
        if !self.remember(hash) {
            return Ok(None);
        }
        // Our own items (sender None) are already applied locally.
        if sender.is_some() {
            self.inbox.push(data.to_vec());
        }
        Ok(Some(ItemKey(hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::SocketAddr, sync::Arc};

    fn peer() -> NodeIdentity {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        NodeIdentity {
            addr,
            id: crate::identity::NodeId(1),
            generation: 1,
            meta: Arc::new(crate::identity::NodeMeta::unknown(addr)),
        }
    }

    #[test]
    fn news_once_then_stale() {
        let inbox = Inbox::default();
        let mut b = Broadcasts::new(inbox.clone());
        assert!(b.receive_item(b"x", Some(&peer())).unwrap().is_some());
        assert!(b.receive_item(b"x", Some(&peer())).unwrap().is_none());
        assert_eq!(inbox.take(), vec![b"x".to_vec()]);
        // Our own item is disseminated but not handed back.
        assert!(b.receive_item(b"y", None).unwrap().is_some());
        assert!(inbox.take().is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut b = Broadcasts::default();
        for i in 0..(SEEN_CAPACITY + 10) as u32 {
            b.receive_item(&i.to_be_bytes(), None).unwrap();
        }
        assert_eq!(b.seen.len(), SEEN_CAPACITY);
    }
}
