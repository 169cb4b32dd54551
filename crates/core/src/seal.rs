//! Sealed gossip datagrams: authenticated encryption of every UDP packet under the cluster's
//! gossip key, with replay protection (design §7).
//!
//! A packet that was not sealed with a key of the [`Keyring`], was altered in flight, or was
//! already accepted once is refused with a typed [`OpenError`] before any byte of it reaches the
//! membership code; the node counts refusals by [`OpenError::reason`].
//!
//! # Cipher
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce that the caller draws for every packet. The
//! gossip key is shared by the whole cluster and lives for months, and every node seals with it
//! independently, so no single counter can hand out nonces; a random 96-bit nonce (AES-GCM,
//! ChaCha20-Poly1305) reaches a collision probability of 2^-32 after about 2^32 packets
//! cluster-wide, which a 1,000-node cluster gossiping ten packets a second per node sends in five
//! days, while a 192-bit random nonce never collides in practice. ChaCha20 is also constant-time
//! in software on machines without AES instructions, and the pure-Rust RustCrypto implementation
//! keeps the core free of C and of any IO.
//!
//! # Layout (byte offsets; integers big-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 2 | [`SEAL_MAGIC`] `"SS"` |
//! | 2 | 1 | [`SEAL_VERSION`] |
//! | 3 | 4 | key id |
//! | 7 | 16 | sender node id (u128) |
//! | 23 | 8 | sender boot generation (u64) |
//! | 31 | 8 | per-boot counter (u64) |
//! | 39 | 24 | nonce |
//! | 63 | n | ciphertext of the plain datagram ([`crate::wire::seal`]'s output) |
//! | 63 + n | 16 | Poly1305 tag |
//!
//! Bytes 0..63 are the associated data: readable (the receiver needs the key id to pick a key and
//! the sender fields for its replay window before it decrypts) but authenticated, so a flipped
//! bit anywhere is a [`OpenError::Forged`].
//!
//! # Replay
//!
//! A captured packet is authentic forever, so authenticity alone would let an outsider replay a
//! goodbye or an old suspicion. [`ReplayGuard`] keeps, per sender, the boot generation and a
//! sliding window of the counters seen, as WireGuard and IPsec do; only packets that passed the
//! tag check ever touch it, so forgeries cannot move a window or fill the table.

use std::collections::{BTreeMap, HashMap};

use chacha20poly1305::{
    aead::{AeadInOut, KeyInit},
    Tag, XChaCha20Poly1305, XNonce,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::wire::MAX_DATAGRAM_BYTES;

/// First bytes of a sealed datagram. Distinct from the plain envelope's `"SH"`, so a packet from
/// an agent that does not seal is refused as [`OpenError::Unsealed`], not as a forgery.
pub const SEAL_MAGIC: [u8; 2] = *b"SS";
/// Version of the sealed layout above. Bumped on any change to it or to the cipher.
pub const SEAL_VERSION: u8 = 1;
/// Bytes before the ciphertext: magic, version, key id, sender, generation, counter, nonce.
pub const HEADER_BYTES: usize = 2 + 1 + 4 + 16 + 8 + 8 + NONCE_BYTES;
/// Size of the random nonce the caller supplies for each packet.
pub const NONCE_BYTES: usize = 24;
/// Size of the Poly1305 tag at the end.
pub const TAG_BYTES: usize = 16;
/// What sealing adds to a datagram.
pub const SEAL_OVERHEAD: usize = HEADER_BYTES + TAG_BYTES;
/// Largest sealed datagram sent or accepted: the same MTU budget as unsealed gossip.
pub const MAX_SEALED_BYTES: usize = MAX_DATAGRAM_BYTES;
/// Largest plain datagram (the output of [`crate::wire::seal`], envelope included) that fits in
/// one sealed packet. foca's `max_packet_size` must be at most this minus the 4-byte plain
/// envelope header, i.e. [`MAX_FOCA_PACKET`].
pub const MAX_PLAINTEXT_BYTES: usize = MAX_SEALED_BYTES - SEAL_OVERHEAD;
/// The `max_packet_size` to give foca once gossip is sealed: the plaintext budget less the plain
/// envelope's magic, version and kind bytes.
pub const MAX_FOCA_PACKET: usize = MAX_PLAINTEXT_BYTES - 4;
/// Most keys a keyring holds: a rotation needs two; the bound keeps a corrupted or hostile
/// keyring file from making every open try thousands of ids.
pub const MAX_KEYS: usize = 8;
/// Counters behind the highest one seen that are still accepted (once each). The window is a
/// 1,024-bit ring of 64-bit blocks; one block is always being recycled, as in RFC 6479.
pub const REPLAY_WINDOW: u64 = 1_024 - 64;
/// Default bound on the senders a [`ReplayGuard`] tracks: well above any cluster shoal targets.
pub const DEFAULT_MAX_SENDERS: usize = 4_096;

/// A 256-bit gossip key. Wiped from memory when dropped; never printed; compared in constant
/// time.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct GossipKey(pub [u8; 32]);

impl PartialEq for GossipKey {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl Eq for GossipKey {}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

/// Why a keyring operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// Another key already has this id: ids name keys across the cluster and must not be reused.
    #[error("key id {0} is already in the keyring")]
    DuplicateId(u32),
    /// The id is not in the keyring.
    #[error("key id {0} is not in the keyring")]
    UnknownId(u32),
    /// The primary seals every packet; promote another key before retiring it.
    #[error("key id {0} is the primary key; promote another key first")]
    RetirePrimary(u32),
    /// The keyring already holds [`MAX_KEYS`] keys.
    #[error("the keyring already holds {MAX_KEYS} keys; retire one first")]
    Full,
    /// A keyring read from disk or the wire is inconsistent.
    #[error("invalid keyring: {0}")]
    Invalid(&'static str),
}

/// The cluster's gossip keys: one primary that seals, any others accepted when opening.
///
/// Rotation with no downtime: [`add`](Self::add) the new key on every node (packets are still
/// sealed with the old one, which everyone has), [`promote`](Self::promote) it once every live
/// node holds it (nodes that have not switched yet still open the new key), then
/// [`retire`](Self::retire) the old key once every node has promoted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KeyringFile", into = "KeyringFile")]
pub struct Keyring {
    primary: u32,
    keys: BTreeMap<u32, GossipKey>,
}

/// The serialized form: checked on the way in, so a keyring never lacks its primary.
#[derive(Serialize, Deserialize)]
struct KeyringFile {
    primary: u32,
    keys: Vec<(u32, GossipKey)>,
}

impl TryFrom<KeyringFile> for Keyring {
    type Error = KeyringError;
    fn try_from(file: KeyringFile) -> Result<Self, KeyringError> {
        if file.keys.len() > MAX_KEYS {
            return Err(KeyringError::Invalid("too many keys"));
        }
        let mut keys = BTreeMap::new();
        for (id, key) in file.keys {
            if keys.insert(id, key).is_some() {
                return Err(KeyringError::Invalid("duplicate key id"));
            }
        }
        if !keys.contains_key(&file.primary) {
            return Err(KeyringError::Invalid("primary key missing"));
        }
        Ok(Keyring {
            primary: file.primary,
            keys,
        })
    }
}

impl From<Keyring> for KeyringFile {
    fn from(ring: Keyring) -> Self {
        KeyringFile {
            primary: ring.primary,
            keys: ring.keys.iter().map(|(id, k)| (*id, k.clone())).collect(),
        }
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring with one key, which is the primary.
    pub fn new(id: u32, key: GossipKey) -> Self {
        Keyring {
            primary: id,
            keys: BTreeMap::from([(id, key)]),
        }
    }

    /// The id of the key that seals.
    pub fn primary_id(&self) -> u32 {
        self.primary
    }

    /// Every key id held, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    /// Adds a key that opens packets but does not seal them yet. Adding the very same key again
    /// is a no-op, so a rotation command can be repeated safely.
    pub fn add(&mut self, id: u32, key: GossipKey) -> Result<(), KeyringError> {
        match self.keys.get(&id) {
            Some(existing) if *existing == key => return Ok(()),
            Some(_) => return Err(KeyringError::DuplicateId(id)),
            None => {}
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.insert(id, key);
        Ok(())
    }

    /// Makes `id` the key that seals from now on.
    pub fn promote(&mut self, id: u32) -> Result<(), KeyringError> {
        if !self.keys.contains_key(&id) {
            return Err(KeyringError::UnknownId(id));
        }
        self.primary = id;
        Ok(())
    }

    /// Drops a key: packets sealed with it are refused from now on.
    pub fn retire(&mut self, id: u32) -> Result<(), KeyringError> {
        if id == self.primary {
            return Err(KeyringError::RetirePrimary(id));
        }
        self.keys
            .remove(&id)
            .map(|_| ())
            .ok_or(KeyringError::UnknownId(id))
    }

    /// For every key held, a 256-bit key for another purpose, named by `label`:
    /// HMAC-SHA-256(gossip key, label), ascending by id. Other users of the cluster's shared
    /// secret (the ingress's sticky cookies) get a key of their own this way, so that nothing
    /// they produce can ever be mistaken for, or help forge, a sealed datagram, and so that
    /// their keys rotate with the gossip keys. The gossip key bytes never leave this module.
    pub fn derive(&self, label: &[u8]) -> Vec<(u32, Zeroizing<[u8; 32]>)> {
        use hmac::{Hmac, Mac};
        self.keys
            .iter()
            .map(|(id, key)| {
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key.0)
                    .expect("HMAC takes any key length");
                mac.update(label);
                (*id, Zeroizing::new(mac.finalize().into_bytes().into()))
            })
            .collect()
    }

    fn cipher(&self, id: u32) -> Option<XChaCha20Poly1305> {
        // ChaCha20's key setup is a copy of 32 bytes (the per-nonce work happens in any case),
        // so building the cipher per packet costs nothing worth caching.
        self.keys
            .get(&id)
            .map(|k| XChaCha20Poly1305::new(&k.0.into()))
    }
}

/// The authenticated header of a sealed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealHeader {
    /// Which key sealed the packet.
    pub key_id: u32,
    /// The sending node's id.
    pub sender: u128,
    /// The sender's boot generation: grows with every start of its agent.
    pub generation: u64,
    /// The sender's packet counter within this boot.
    pub counter: u64,
}

impl SealHeader {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&SEAL_MAGIC);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
    }

    /// Reads the header fields of `packet` (which must hold at least [`HEADER_BYTES`]).
    fn read(packet: &[u8]) -> Self {
        let int = |from: usize, to: usize| -> u128 {
            packet[from..to]
                .iter()
                .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
        };
        SealHeader {
            key_id: int(3, 7) as u32,
            sender: int(7, 23),
            generation: int(23, 31) as u64,
            counter: int(31, 39) as u64,
        }
    }
}

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The plaintext is over [`MAX_PLAINTEXT_BYTES`]: foca's packet size is set too high.
    #[error("datagram of {0} bytes exceeds the sealed plaintext limit of {MAX_PLAINTEXT_BYTES}")]
    TooLarge(usize),
    /// The per-boot counter is spent (2^64 packets): the agent must start a new generation.
    #[error("packet counter exhausted; restart with a new generation")]
    CounterExhausted,
}

/// Why a datagram was refused. Every variant is a distinct reason so the node can count them
/// (see [`OpenError::reason`]); none carries attacker-controlled text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No sealed magic, or shorter than a header and tag: stray traffic, a port scan, or an
    /// agent that does not seal.
    #[error("not a sealed shoal datagram")]
    Unsealed,
    /// A sealed layout version this build does not read.
    #[error("sealed datagram version {0} (this agent reads {SEAL_VERSION})")]
    Version(u8),
    /// Sealed with a key id this node does not hold: a retired key, a rotation this node has
    /// not received yet, or another cluster.
    #[error("sealed with unknown key id {0}")]
    UnknownKey(u32),
    /// The tag does not match: the packet was altered, or sealed by someone else under a key id
    /// we happen to hold.
    #[error("authentication tag mismatch")]
    Forged,
    /// Authentic, but this counter was already accepted, or is older than the replay window.
    #[error("replayed or too old")]
    Replay,
    /// Authentic, but from an older boot of a sender we have heard from since it restarted.
    #[error("from an earlier boot generation of its sender")]
    StaleGeneration,
    /// Over [`MAX_SEALED_BYTES`].
    #[error("datagram of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

impl OpenError {
    /// A stable, low-cardinality label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Unsealed => "unsealed",
            OpenError::Version(_) => "version",
            OpenError::UnknownKey(_) => "unknown_key",
            OpenError::Forged => "forged",
            OpenError::Replay => "replay",
            OpenError::StaleGeneration => "stale_generation",
            OpenError::TooLarge(_) => "too_large",
        }
    }
}

/// Seals `plaintext` under the keyring's primary key with the given header fields and nonce.
///
/// `nonce` must be fresh random bytes for every call (from the agent's CSPRNG); the header's
/// `key_id` is taken from the keyring. Most callers want [`Sealer`], which keeps the counter.
pub fn seal(
    keyring: &Keyring,
    sender: u128,
    generation: u64,
    counter: u64,
    nonce: [u8; NONCE_BYTES],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(SealError::TooLarge(plaintext.len()));
    }
    let header = SealHeader {
        key_id: keyring.primary,
        sender,
        generation,
        counter,
    };
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    header.write(&mut out);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let cipher = keyring.cipher(keyring.primary).expect("primary is held");
    let (aad, body) = out.split_at_mut(HEADER_BYTES);
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        .expect("a datagram is far below ChaCha20's length limit");
    out.extend_from_slice(&tag);
    Ok(out)
}

/// A sealed datagram that passed the tag check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its header: who sent it, when in that sender's life, under which key.
    pub header: SealHeader,
    /// The plain datagram, for [`crate::wire::open`].
    pub plaintext: Vec<u8>,
}

/// Checks a datagram's seal and decrypts it, without replay protection.
///
/// Never panics, and allocates at most the packet's own length (itself bounded by
/// [`MAX_SEALED_BYTES`]). Use [`open_checked`] on the receive path; this one is for callers that
/// check freshness themselves (tests, tools reading a capture).
pub fn open(keyring: &Keyring, packet: &[u8]) -> Result<Opened, OpenError> {
    if packet.len() > MAX_SEALED_BYTES {
        return Err(OpenError::TooLarge(packet.len()));
    }
    if packet.len() < SEAL_OVERHEAD || packet[..2] != SEAL_MAGIC {
        return Err(OpenError::Unsealed);
    }
    if packet[2] != SEAL_VERSION {
        return Err(OpenError::Version(packet[2]));
    }
    let header = SealHeader::read(packet);
    let cipher = keyring
        .cipher(header.key_id)
        .ok_or(OpenError::UnknownKey(header.key_id))?;
    let aad = &packet[..HEADER_BYTES];
    let nonce = XNonce::try_from(&packet[HEADER_BYTES - NONCE_BYTES..HEADER_BYTES])
        .expect("slice has the nonce's length");
    let tag_at = packet.len() - TAG_BYTES;
    let tag = Tag::try_from(&packet[tag_at..]).expect("slice has the tag's length");
    let mut plaintext = packet[HEADER_BYTES..tag_at].to_vec();
    cipher
        .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| OpenError::Forged)?;
    Ok(Opened { header, plaintext })
}

/// Opens a datagram and accepts it into `guard`: the receive path's one call.
///
/// Order matters: the tag is checked before the guard is consulted, so forged packets can
/// neither advance a sender's window nor create an entry for a made-up sender.
pub fn open_checked(
    keyring: &Keyring,
    guard: &mut ReplayGuard,
    packet: &[u8],
) -> Result<Opened, OpenError> {
    let opened = open(keyring, packet)?;
    guard.accept(&opened.header)?;
    Ok(opened)
}

/// Seals this node's datagrams, counting them within one boot generation.
#[derive(Debug, Clone)]
pub struct Sealer {
    sender: u128,
    generation: u64,
    next: u64,
}

impl Sealer {
    /// A sealer for node `sender` in boot `generation` (which must grow with every start of the
    /// agent: the data dir's `start_generation` provides it). The counter starts at 0.
    pub fn new(sender: u128, generation: u64) -> Self {
        Sealer {
            sender,
            generation,
            next: 0,
        }
    }

    /// Seals one datagram under the keyring's primary key. `nonce`: 24 fresh random bytes.
    pub fn seal(
        &mut self,
        keyring: &Keyring,
        plaintext: &[u8],
        nonce: [u8; NONCE_BYTES],
    ) -> Result<Vec<u8>, SealError> {
        if self.next == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let packet = seal(
            keyring,
            self.sender,
            self.generation,
            self.next,
            nonce,
            plaintext,
        )?;
        self.next += 1;
        Ok(packet)
    }

    /// The counter the next packet will carry.
    pub fn next_counter(&self) -> u64 {
        self.next
    }

    /// The node this sealer seals for.
    pub fn sender(&self) -> u128 {
        self.sender
    }

    /// The boot generation it seals in.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// One sender's replay state: its newest generation and a sliding window of counters.
#[derive(Debug, Clone)]
struct Window {
    generation: u64,
    /// Highest counter accepted in `generation`.
    top: u64,
    /// Ring of 16 × 64 bits; bit `c % 1024` is set when counter `c` (within the window) was seen.
    bits: [u64; BLOCKS],
    /// Logical time of the last accepted packet, for evicting the quietest sender.
    last_used: u64,
}

const BLOCKS: usize = 16;
const RING_BITS: u64 = (BLOCKS as u64) * 64;

impl Window {
    fn new(generation: u64, counter: u64, tick: u64) -> Self {
        let mut window = Window {
            generation,
            top: counter,
            bits: [0; BLOCKS],
            last_used: tick,
        };
        window.set(counter);
        window
    }

    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % RING_BITS;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn set(&mut self, counter: u64) {
        let (block, mask) = Self::slot(counter);
        self.bits[block] |= mask;
    }

    /// Whether `counter` would be accepted, without recording it.
    fn fresh(&self, counter: u64) -> bool {
        if counter > self.top {
            return true;
        }
        if self.top - counter >= REPLAY_WINDOW {
            return false;
        }
        let (block, mask) = Self::slot(counter);
        self.bits[block] & mask == 0
    }

    /// Records an accepted `counter` (which [`fresh`](Self::fresh) allowed).
    fn record(&mut self, counter: u64) {
        if counter > self.top {
            // Clear the blocks the window slides over; more than a ring's worth clears them all.
            let old_block = self.top / 64;
            let new_block = counter / 64;
            let steps = (new_block - old_block).min(BLOCKS as u64);
            for i in 1..=steps {
                self.bits[((old_block + i) % BLOCKS as u64) as usize] = 0;
            }
            self.top = counter;
        }
        self.set(counter);
    }
}

/// Remembers which authentic packets were already accepted, per sender.
///
/// Keyed by sender node id. A packet from a higher boot generation than the sender's last
/// replaces its window (the sender restarted, and its counter started over); a lower generation
/// is [`OpenError::StaleGeneration`]. The table holds at most `max_senders` entries; when a new
/// sender arrives at a full table, the one heard from least recently is forgotten, which only
/// reopens the window of a sender that has been silent longest (its old packets could be replayed
/// once each, and foca discards stale membership news by incarnation anyway).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    senders: HashMap<u128, Window>,
    max_senders: usize,
    tick: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// An empty guard tracking at most `max_senders` senders (at least one).
    pub fn new(max_senders: usize) -> Self {
        ReplayGuard {
            senders: HashMap::new(),
            max_senders: max_senders.max(1),
            tick: 0,
        }
    }

    /// How many senders are tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Whether a packet with this header would be accepted, without recording it.
    pub fn check(&self, header: &SealHeader) -> Result<(), OpenError> {
        match self.senders.get(&header.sender) {
            None => Ok(()),
            Some(w) if header.generation > w.generation => Ok(()),
            Some(w) if header.generation < w.generation => Err(OpenError::StaleGeneration),
            Some(w) if w.fresh(header.counter) => Ok(()),
            Some(_) => Err(OpenError::Replay),
        }
    }

    /// Accepts an authentic packet's header, or refuses it as a replay or a stale generation.
    /// Call only with headers of packets whose tag was verified ([`open_checked`] does).
    pub fn accept(&mut self, header: &SealHeader) -> Result<(), OpenError> {
        self.check(header)?;
        self.tick += 1;
        let tick = self.tick;
        match self.senders.get_mut(&header.sender) {
            Some(w) if w.generation == header.generation => {
                w.record(header.counter);
                w.last_used = tick;
            }
            Some(w) => *w = Window::new(header.generation, header.counter, tick),
            None => {
                if self.senders.len() >= self.max_senders {
                    self.evict_quietest();
                }
                self.senders.insert(
                    header.sender,
                    Window::new(header.generation, header.counter, tick),
                );
            }
        }
        Ok(())
    }

    /// Forgets a sender (after it left the cluster for good, or its certificate was revoked).
    pub fn forget(&mut self, sender: u128) {
        self.senders.remove(&sender);
    }

    fn evict_quietest(&mut self) {
        // A linear scan: eviction happens only when a cluster outgrows the bound, and only
        // authentic senders are ever in the table.
        if let Some(quietest) = self
            .senders
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(id, _)| *id)
        {
            self.senders.remove(&quietest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::new(1, GossipKey([7; 32]))
    }

    fn nonce(n: u8) -> [u8; NONCE_BYTES] {
        [n; NONCE_BYTES]
    }

    #[test]
    fn seal_open_round_trip() {
        let ring = ring();
        let packet = seal(&ring, 42, 3, 9, nonce(1), b"hello").unwrap();
        assert_eq!(packet.len(), 5 + SEAL_OVERHEAD);
        let opened = open(&ring, &packet).unwrap();
        assert_eq!(opened.plaintext, b"hello");
        assert_eq!(
            opened.header,
            SealHeader {
                key_id: 1,
                sender: 42,
                generation: 3,
                counter: 9
            }
        );
    }

    #[test]
    fn derived_keys_are_stable_per_key_and_label_and_never_the_key_itself() {
        let mut ring = ring();
        ring.add(2, GossipKey([9; 32])).unwrap();
        let a = ring.derive(b"label a");
        assert_eq!(
            a.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 2],
            "one per key, by id"
        );
        assert_ne!(*a[0].1, *a[1].1, "two keys, two derived keys");
        assert_ne!(*a[0].1, [7; 32]);
        assert_eq!(*ring.derive(b"label a")[0].1, *a[0].1, "stable");
        assert_ne!(*ring.derive(b"label b")[0].1, *a[0].1, "labels separate");
        // The same key under another id derives the same bytes: only the key matters.
        let other = Keyring::new(5, GossipKey([7; 32]));
        assert_eq!(*other.derive(b"label a")[0].1, *a[0].1);
    }

    #[test]
    fn layout_offsets_are_as_documented() {
        let packet = seal(&ring(), 0x0102, 0x0304, 0x0506, nonce(0xAA), b"").unwrap();
        assert_eq!(&packet[0..2], b"SS");
        assert_eq!(packet[2], SEAL_VERSION);
        assert_eq!(&packet[3..7], &1u32.to_be_bytes());
        assert_eq!(&packet[7..23], &0x0102u128.to_be_bytes());
        assert_eq!(&packet[23..31], &0x0304u64.to_be_bytes());
        assert_eq!(&packet[31..39], &0x0506u64.to_be_bytes());
        assert_eq!(&packet[39..63], &[0xAA; 24]);
        assert_eq!(packet.len(), 63 + 16);
        assert_eq!(SEAL_OVERHEAD, 79);
    }

    #[test]
    fn budget_fits_the_datagram_limit() {
        let ring = ring();
        let biggest = vec![0u8; MAX_PLAINTEXT_BYTES];
        let packet = seal(&ring, 1, 1, 0, nonce(0), &biggest).unwrap();
        assert_eq!(packet.len(), MAX_SEALED_BYTES);
        assert!(open(&ring, &packet).is_ok());
        assert_eq!(
            seal(&ring, 1, 1, 0, nonce(0), &[0; MAX_PLAINTEXT_BYTES + 1]),
            Err(SealError::TooLarge(MAX_PLAINTEXT_BYTES + 1))
        );
        assert_eq!(MAX_FOCA_PACKET + 4 + SEAL_OVERHEAD, MAX_DATAGRAM_BYTES);
    }

    #[test]
    fn refusals_are_typed() {
        let ring = ring();
        let good = seal(&ring, 1, 1, 0, nonce(0), b"payload").unwrap();
        assert_eq!(open(&ring, b""), Err(OpenError::Unsealed));
        assert_eq!(
            open(
                &ring,
                &crate::wire::seal(crate::wire::PacketKind::Swim, &[0; 100])
            ),
            Err(OpenError::Unsealed)
        );
        assert_eq!(
            open(&ring, &good[..SEAL_OVERHEAD - 1]),
            Err(OpenError::Unsealed)
        );
        let mut v = good.clone();
        v[2] = 9;
        assert_eq!(open(&ring, &v), Err(OpenError::Version(9)));
        let other = Keyring::new(2, GossipKey([7; 32]));
        assert_eq!(open(&other, &good), Err(OpenError::UnknownKey(1)));
        let wrong_key = Keyring::new(1, GossipKey([8; 32]));
        assert_eq!(open(&wrong_key, &good), Err(OpenError::Forged));
        assert_eq!(
            open(&ring, &vec![0u8; MAX_SEALED_BYTES + 1]),
            Err(OpenError::TooLarge(MAX_SEALED_BYTES + 1))
        );
        let labels: std::collections::HashSet<_> = [
            OpenError::Unsealed,
            OpenError::Version(0),
            OpenError::UnknownKey(0),
            OpenError::Forged,
            OpenError::Replay,
            OpenError::StaleGeneration,
            OpenError::TooLarge(0),
        ]
        .iter()
        .map(OpenError::reason)
        .collect();
        assert_eq!(labels.len(), 7);
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ring = ring();
        let good = seal(&ring, 5, 6, 7, nonce(3), b"a membership update").unwrap();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(open(&ring, &bad).is_err(), "byte {byte} bit {bit} accepted");
            }
        }
        // Flips in the header after the version (key id aside) are caught by the tag.
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert_eq!(open(&ring, &bad), Err(OpenError::Forged));
    }

    #[test]
    fn rotation_without_downtime() {
        // Two nodes, both on key 1.
        let mut a = ring();
        let mut b = ring();
        let k2 = GossipKey([9; 32]);
        // Step 1: every node adds key 2; sealing still uses key 1.
        a.add(2, k2.clone()).unwrap();
        a.add(2, k2.clone()).unwrap(); // repeating is harmless
        let from_a = seal(&a, 1, 1, 0, nonce(0), b"x").unwrap();
        assert!(open(&b, &from_a).is_ok());
        b.add(2, k2.clone()).unwrap();
        // Step 2: a promotes first; b still opens a's packets and a still opens b's.
        a.promote(2).unwrap();
        let from_a = seal(&a, 1, 1, 1, nonce(1), b"x").unwrap();
        assert_eq!(open(&b, &from_a).unwrap().header.key_id, 2);
        let from_b = seal(&b, 2, 1, 0, nonce(2), b"x").unwrap();
        assert_eq!(open(&a, &from_b).unwrap().header.key_id, 1);
        b.promote(2).unwrap();
        // Step 3: retire key 1; its packets are refused from now on.
        a.retire(1).unwrap();
        assert_eq!(open(&a, &from_b), Err(OpenError::UnknownKey(1)));
        assert_eq!(a.retire(2), Err(KeyringError::RetirePrimary(2)));
        assert_eq!(a.retire(1), Err(KeyringError::UnknownId(1)));
        assert_eq!(a.promote(1), Err(KeyringError::UnknownId(1)));
        assert_eq!(
            a.add(2, GossipKey([1; 32])),
            Err(KeyringError::DuplicateId(2))
        );
        assert_eq!(a.ids().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn keyring_is_bounded_and_checked_on_decode() {
        let mut r = ring();
        for id in 2..=MAX_KEYS as u32 {
            r.add(id, GossipKey([id as u8; 32])).unwrap();
        }
        assert_eq!(r.add(99, GossipKey([0; 32])), Err(KeyringError::Full));
        let bytes = crate::wire::encode(&r).unwrap();
        let back: Keyring = crate::wire::decode(&bytes).unwrap();
        assert_eq!(back.ids().count(), MAX_KEYS);
        assert_eq!(back.primary_id(), 1);
        // A file whose primary is missing is refused, not trusted.
        let broken = KeyringFile {
            primary: 5,
            keys: vec![(1, GossipKey([0; 32]))],
        };
        let bytes = crate::wire::encode(&broken).unwrap();
        assert!(crate::wire::decode::<Keyring>(&bytes).is_err());
        assert!(
            !format!("{r:?}").contains("07"),
            "Debug must not print keys"
        );
    }

    fn header(sender: u128, generation: u64, counter: u64) -> SealHeader {
        SealHeader {
            key_id: 1,
            sender,
            generation,
            counter,
        }
    }

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.accept(&header(1, 1, 10)), Ok(()));
        assert_eq!(g.accept(&header(1, 1, 10)), Err(OpenError::Replay));
        // Reordered but within the window: accepted once.
        assert_eq!(g.accept(&header(1, 1, 5)), Ok(()));
        assert_eq!(g.accept(&header(1, 1, 5)), Err(OpenError::Replay));
        assert_eq!(g.accept(&header(1, 1, 2_000)), Ok(()));
        // 11 was never seen, but it fell out of the window when 2,000 arrived.
        assert_eq!(g.accept(&header(1, 1, 11)), Err(OpenError::Replay));
        assert_eq!(g.accept(&header(1, 1, 2_000 - REPLAY_WINDOW + 1)), Ok(()));
        assert_eq!(
            g.accept(&header(1, 1, 2_000 - REPLAY_WINDOW)),
            Err(OpenError::Replay)
        );
        // Other senders have windows of their own.
        assert_eq!(g.accept(&header(2, 1, 10)), Ok(()));
    }

    #[test]
    fn generations_reset_or_refuse() {
        let mut g = ReplayGuard::default();
        g.accept(&header(1, 5, 100)).unwrap();
        // The sender restarted: its counter starts over.
        assert_eq!(g.accept(&header(1, 6, 0)), Ok(()));
        assert_eq!(g.accept(&header(1, 6, 0)), Err(OpenError::Replay));
        // A packet from before the restart is stale, whatever its counter.
        assert_eq!(
            g.accept(&header(1, 5, 101)),
            Err(OpenError::StaleGeneration)
        );
        assert_eq!(g.check(&header(1, 6, 1)), Ok(()));
    }

    #[test]
    fn sender_table_is_bounded_and_evicts_the_quietest() {
        let mut g = ReplayGuard::new(3);
        for s in 1..=3 {
            g.accept(&header(s, 1, 0)).unwrap();
        }
        g.accept(&header(1, 1, 1)).unwrap(); // 2 is now the quietest
        g.accept(&header(4, 1, 0)).unwrap();
        assert_eq!(g.len(), 3);
        // 2 was forgotten, 1 and 3 were not.
        assert_eq!(g.check(&header(2, 1, 0)), Ok(()));
        assert_eq!(g.check(&header(1, 1, 1)), Err(OpenError::Replay));
        assert_eq!(g.check(&header(3, 1, 0)), Err(OpenError::Replay));
        g.forget(3);
        assert_eq!(g.check(&header(3, 1, 0)), Ok(()));
    }

    #[test]
    fn forged_packets_never_touch_the_guard() {
        let ring = ring();
        let mut g = ReplayGuard::new(2);
        let mut forged = seal(&ring, 9, 1, 1_000_000, nonce(0), b"x").unwrap();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(open_checked(&ring, &mut g, &forged), Err(OpenError::Forged));
        assert!(g.is_empty());
        // A genuine packet with a small counter from the same sender is still fresh.
        let good = seal(&ring, 9, 1, 0, nonce(1), b"x").unwrap();
        assert!(open_checked(&ring, &mut g, &good).is_ok());
        assert_eq!(open_checked(&ring, &mut g, &good), Err(OpenError::Replay));
    }

    #[test]
    fn sealer_counts_and_packets_open_once() {
        let ring = ring();
        let mut s = Sealer::new(3, 8);
        let mut g = ReplayGuard::default();
        let p0 = s.seal(&ring, b"a", nonce(0)).unwrap();
        let p1 = s.seal(&ring, b"b", nonce(1)).unwrap();
        assert_eq!(s.next_counter(), 2);
        assert_eq!(open_checked(&ring, &mut g, &p1).unwrap().plaintext, b"b");
        assert_eq!(open_checked(&ring, &mut g, &p0).unwrap().header.counter, 0);
        assert_eq!(open_checked(&ring, &mut g, &p0), Err(OpenError::Replay));
        s.next = u64::MAX;
        assert_eq!(
            s.seal(&ring, b"c", nonce(2)),
            Err(SealError::CounterExhausted)
        );
    }

    /// A model of the window: the set of accepted counters, with the same acceptance rule.
    fn model_accepts(seen: &std::collections::BTreeSet<u64>, counter: u64) -> bool {
        let top = seen.iter().next_back().copied();
        match top {
            None => true,
            Some(top) if counter > top => true,
            Some(top) => top - counter < REPLAY_WINDOW && !seen.contains(&counter),
        }
    }

    proptest! {
        #[test]
        fn window_matches_a_set_model(
            steps in proptest::collection::vec((0u64..64, 0u64..4_000), 1..400)
        ) {
            let mut g = ReplayGuard::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut base = 0u64;
            for (jump, back) in steps {
                // Mostly forwards with occasional big jumps, and re-sends of older counters.
                base += jump * jump;
                let counter = base.saturating_sub(back);
                let want = model_accepts(&seen, counter);
                let got = g.accept(&header(1, 1, counter)).is_ok();
                prop_assert_eq!(got, want, "counter {} top {:?}", counter, seen.iter().next_back());
                if got {
                    seen.insert(counter);
                }
            }
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1_500)) {
            let ring = ring();
            let mut g = ReplayGuard::new(4);
            let _ = open_checked(&ring, &mut g, &bytes);
            // The same bytes behind a valid-looking header reach the tag check.
            let mut framed = b"SS\x01\0\0\0\x01".to_vec();
            framed.extend_from_slice(&bytes);
            prop_assert!(open_checked(&ring, &mut g, &framed).is_err());
            prop_assert!(g.is_empty());
        }

        #[test]
        fn round_trip_any_payload(
            payload in proptest::collection::vec(any::<u8>(), 0..MAX_PLAINTEXT_BYTES),
            sender: u128, generation: u64, counter in 0u64..u64::MAX, n: [u8; 24],
        ) {
            let ring = ring();
            let packet = seal(&ring, sender, generation, counter, n, &payload).unwrap();
            let opened = open(&ring, &packet).unwrap();
            prop_assert_eq!(opened.plaintext, payload);
            prop_assert_eq!(opened.header.sender, sender);
        }
    }
}
