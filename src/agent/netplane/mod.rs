//! The netplane: brings the kernel of this host to a [`Plan`] (`shoal_core::net::plane`):
//! routes to the other nodes' subnets, the VXLAN device with its neighbours and forwarding
//! entries, and the rules of shoal's iptables chains. Linux only, as root.
//!
//! It drives the `ip`, `bridge` and `iptables-restore` commands (iproute2 and iptables, on every
//! Linux host that runs Docker) rather than netlink: what it does is then what an operator types
//! to look at it (`ip route show proto 57`, `iptables-save`), the iptables backend (legacy or
//! nftables) is whichever the host's `iptables` is, as Docker's own rules are, and a netlink
//! crate would add a second way for shoal's rules to disagree with Docker's. A reconcile runs a
//! few commands when something changed and three listings when nothing did.
//!
//! Every call reconciles: it lists what is there, adds what is missing, replaces what differs
//! and removes what is shoal's but no longer wanted, touching nothing that is not shoal's (routes
//! of protocol [`ROUTE_PROTO`], the device [`VXLAN_DEVICE`], the chains of [`CHAINS`] and the
//! jumps to them). The calls block: run them on a blocking thread
//! (`tokio::task::spawn_blocking`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use serde::Deserialize;
use shoal_core::net::plane::{
    Link, Plan, RouteSpec, RuleSpec, Table, Via, VxlanSpec, CHAINS, ROUTE_PROTO, VXLAN_DEVICE,
    VXLAN_PORT, VXLAN_VNI,
};

/// MTU of the VXLAN device: a 1500-byte underlay less VXLAN's 50 bytes.
pub const VXLAN_MTU: u32 = 1450;

/// A command that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed: {message}")]
pub struct NetplaneError {
    /// The command line.
    pub command: String,
    /// Its error output, or why it could not run.
    pub message: String,
}

/// What an [`Netplane::apply`] changed (all zero when the kernel already matched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Routes added or replaced.
    pub routes_set: usize,
    /// Stale routes removed.
    pub routes_removed: usize,
    /// Neighbour and forwarding entries set or removed.
    pub vxlan_entries: usize,
    /// Whether the VXLAN device was created or removed.
    pub device_changed: bool,
    /// Whether shoal's chains were rewritten.
    pub rules_changed: bool,
}

/// The executor. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Netplane {
    /// Run every command inside this network namespace (`ip netns exec NS ...`), for tests.
    netns: Option<String>,
}

impl Netplane {
    /// The executor for this host's own network namespace.
    pub fn new() -> Self {
        Netplane::default()
    }

    /// The executor for network namespace `ns` (made with `ip netns add`).
    pub fn in_netns(ns: &str) -> Self {
        Netplane {
            netns: Some(ns.to_string()),
        }
    }

    /// How `addr` is reached from here: `Direct` when the kernel's route to it has no gateway
    /// (a shared link), `Tunnel` otherwise.
    pub fn link_of(&self, addr: Ipv4Addr) -> Result<Link, NetplaneError> {
        #[derive(Deserialize)]
        struct RouteGet {
            gateway: Option<String>,
        }
        let out = self.run("ip", &["-j", "route", "get", &addr.to_string()], None)?;
        let routes: Vec<RouteGet> = parse_json("ip route get", &out)?;
        Ok(match routes.first() {
            Some(RouteGet { gateway: None }) => Link::Direct,
            _ => Link::Tunnel,
        })
    }

    /// Brings the kernel to `plan`.
    pub fn apply(&self, plan: &Plan) -> Result<Applied, NetplaneError> {
        let mut applied = Applied::default();
        // Routes over the device need it first; a device going away takes its routes with it,
        // so they go first (and are counted).
        if plan.vxlan.is_some() {
            self.apply_vxlan(plan.vxlan.as_ref(), &mut applied)?;
            self.apply_routes(&plan.routes, &mut applied)?;
        } else {
            self.apply_routes(&plan.routes, &mut applied)?;
            self.apply_vxlan(None, &mut applied)?;
        }
        applied.rules_changed = self.apply_rules(&plan.rules)?;
        Ok(applied)
    }

    /// Removes everything of shoal's: routes, the VXLAN device, chains and jumps (a node that
    /// leaves the cluster).
    pub fn clear(&self) -> Result<(), NetplaneError> {
        self.apply_routes(&[], &mut Applied::default())?;
        self.apply_vxlan(None, &mut Applied::default())?;
        for (table, chain, froms) in CHAINS {
            for from in froms.iter().chain(std::iter::once(&"FORWARD")) {
                let args = ["-t", table.as_str(), "-D", from, "-j", chain];
                while self.run("iptables", &args, None).is_ok() {}
            }
        }
        // Flushed before deleted: a chain still referenced (the isolation chain, from the
        // forward chain) cannot go first.
        for (table, chain, _) in CHAINS {
            let _ = self.run("iptables", &["-t", table.as_str(), "-F", chain], None);
        }
        for (table, chain, _) in CHAINS {
            let _ = self.run("iptables", &["-t", table.as_str(), "-X", chain], None);
        }
        Ok(())
    }

    fn apply_routes(&self, want: &[RouteSpec], applied: &mut Applied) -> Result<(), NetplaneError> {
        #[derive(Deserialize)]
        struct Route {
            dst: String,
            gateway: Option<String>,
            dev: Option<String>,
        }
        let proto = ROUTE_PROTO.to_string();
        let out = self.run("ip", &["-j", "route", "show", "proto", &proto], None)?;
        let current: Vec<Route> = parse_json("ip route show", &out)?;
        let current: BTreeMap<String, (Option<String>, Option<String>)> = current
            .into_iter()
            .map(|r| (r.dst, (r.gateway, r.dev)))
            .collect();
        let mut wanted = BTreeSet::new();
        for r in want {
            let dst = r.dest.to_string();
            wanted.insert(dst.clone());
            let (gw, on_vxlan) = match r.via {
                Via::Gateway(gw) => (gw, false),
                Via::Vxlan(next_hop) => (next_hop, true),
            };
            if let Some((cur_gw, cur_dev)) = current.get(&dst) {
                let dev_ok = !on_vxlan || cur_dev.as_deref() == Some(VXLAN_DEVICE);
                if cur_gw.as_deref() == Some(&gw.to_string()) && dev_ok {
                    continue;
                }
            }
            let gw = gw.to_string();
            let mut args = vec!["route", "replace", &dst, "via", &gw];
            if on_vxlan {
                args.extend(["dev", VXLAN_DEVICE, "onlink"]);
            }
            args.extend(["proto", &proto]);
            self.run("ip", &args, None)?;
            applied.routes_set += 1;
        }
        for dst in current.keys().filter(|d| !wanted.contains(*d)) {
            // Gone already (its device went away) is fine.
            if self
                .run("ip", &["route", "del", dst, "proto", &proto], None)
                .is_ok()
            {
                applied.routes_removed += 1;
            }
        }
        Ok(())
    }

    fn apply_vxlan(
        &self,
        want: Option<&VxlanSpec>,
        applied: &mut Applied,
    ) -> Result<(), NetplaneError> {
        #[derive(Deserialize)]
        struct LinkInfo {
            address: Option<String>,
            linkinfo: Option<Kind>,
        }
        #[derive(Deserialize)]
        struct Kind {
            info_data: Option<VxlanData>,
        }
        #[derive(Deserialize)]
        struct VxlanData {
            id: Option<u32>,
            port: Option<u16>,
        }
        let existing = match self.run("ip", &["-j", "-d", "link", "show", VXLAN_DEVICE], None) {
            Ok(out) => parse_json::<Vec<LinkInfo>>("ip link show", &out)?
                .into_iter()
                .next(),
            Err(_) => None,
        };
        let Some(spec) = want else {
            if existing.is_some() {
                self.run("ip", &["link", "del", VXLAN_DEVICE], None)?;
                applied.device_changed = true;
            }
            return Ok(());
        };
        let mac = mac_text(&spec.mac);
        let right = existing.as_ref().is_some_and(|l| {
            let data = l.linkinfo.as_ref().and_then(|k| k.info_data.as_ref());
            l.address.as_deref() == Some(&mac)
                && data.is_some_and(|d| d.id == Some(VXLAN_VNI) && d.port == Some(VXLAN_PORT))
        });
        if !right {
            if existing.is_some() {
                self.run("ip", &["link", "del", VXLAN_DEVICE], None)?;
            }
            let (vni, port, mtu) = (
                VXLAN_VNI.to_string(),
                VXLAN_PORT.to_string(),
                VXLAN_MTU.to_string(),
            );
            self.run(
                "ip",
                &[
                    "link",
                    "add",
                    VXLAN_DEVICE,
                    "address",
                    &mac,
                    "mtu",
                    &mtu,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "dstport",
                    &port,
                    "nolearning",
                ],
                None,
            )?;
            applied.device_changed = true;
        }
        self.run("ip", &["link", "set", VXLAN_DEVICE, "up"], None)?;

        #[derive(Deserialize)]
        struct Neigh {
            dst: String,
            lladdr: Option<String>,
        }
        let out = self.run("ip", &["-j", "neigh", "show", "dev", VXLAN_DEVICE], None)?;
        let neighbours: BTreeMap<String, Option<String>> =
            parse_json::<Vec<Neigh>>("ip neigh show", &out)?
                .into_iter()
                .map(|n| (n.dst, n.lladdr))
                .collect();
        for (ip, peer_mac) in &spec.neighbours {
            let (ip, peer_mac) = (ip.to_string(), mac_text(peer_mac));
            if neighbours.get(&ip).and_then(|m| m.as_deref()) == Some(&peer_mac) {
                continue;
            }
            self.run(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &peer_mac,
                    "dev",
                    VXLAN_DEVICE,
                    "nud",
                    "permanent",
                ],
                None,
            )?;
            applied.vxlan_entries += 1;
        }
        for ip in neighbours.keys() {
            if !spec.neighbours.keys().any(|n| n.to_string() == *ip) {
                let _ = self.run("ip", &["neigh", "del", ip, "dev", VXLAN_DEVICE], None);
                applied.vxlan_entries += 1;
            }
        }

        #[derive(Deserialize)]
        struct Fdb {
            mac: String,
            dst: Option<String>,
        }
        let out = self.run("bridge", &["-j", "fdb", "show", "dev", VXLAN_DEVICE], None)?;
        let fdb: Vec<(String, String)> = parse_json::<Vec<Fdb>>("bridge fdb show", &out)?
            .into_iter()
            .filter_map(|f| Some((f.mac, f.dst?)))
            .collect();
        let want_fdb: BTreeMap<String, String> = spec
            .fdb
            .iter()
            .map(|(m, ip)| (mac_text(m), ip.to_string()))
            .collect();
        for (m, dst) in &want_fdb {
            if fdb.iter().any(|(fm, fd)| fm == m && fd == dst) {
                continue;
            }
            self.run(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    m,
                    "dev",
                    VXLAN_DEVICE,
                    "dst",
                    dst,
                    "self",
                    "permanent",
                ],
                None,
            )?;
            applied.vxlan_entries += 1;
        }
        for (m, dst) in &fdb {
            if want_fdb.get(m) != Some(dst) {
                let _ = self.run(
                    "bridge",
                    &["fdb", "del", m, "dev", VXLAN_DEVICE, "dst", dst, "self"],
                    None,
                );
                applied.vxlan_entries += 1;
            }
        }
        Ok(())
    }

    /// Rewrites shoal's chains in one `iptables-restore` per table when they differ from
    /// `rules`, then makes sure each is jumped to. True if anything was written.
    fn apply_rules(&self, rules: &[RuleSpec]) -> Result<bool, NetplaneError> {
        let mut changed = false;
        for table in [Table::Filter, Table::Nat] {
            let ours: Vec<&str> = CHAINS
                .iter()
                .filter(|(t, _, _)| *t == table)
                .map(|(_, c, _)| *c)
                .collect();
            let want: Vec<String> = rules
                .iter()
                .filter(|r| r.table == table)
                .map(|r| format!("-A {} {}", r.chain, r.args.join(" ")))
                .collect();
            let dump = self.run("iptables-save", &["-t", table.as_str()], None)?;
            let have: Vec<String> = dump
                .lines()
                .filter(|l| ours.iter().any(|c| l.starts_with(&format!("-A {c} "))))
                .map(str::to_string)
                .collect();
            let declared = ours
                .iter()
                .all(|c| dump.lines().any(|l| l.starts_with(&format!(":{c} "))));
            if !declared || !same_rules(&have, &want) {
                let mut input = format!("*{}\n", table.as_str());
                for c in &ours {
                    input.push_str(&format!(":{c} - [0:0]\n"));
                }
                for line in &want {
                    input.push_str(line);
                    input.push('\n');
                }
                input.push_str("COMMIT\n");
                self.run("iptables-restore", &["--noflush"], Some(&input))?;
                changed = true;
            }
            for (t, chain, froms) in CHAINS.iter().filter(|(t, _, _)| *t == table) {
                for from in *froms {
                    let from = self.hook(*t, from);
                    let check = ["-t", t.as_str(), "-C", &from, "-j", chain];
                    if self.run("iptables", &check, None).is_err() {
                        self.run(
                            "iptables",
                            &["-t", t.as_str(), "-I", &from, "1", "-j", chain],
                            None,
                        )?;
                        changed = true;
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The chain to jump from: `DOCKER-USER` exists only where Docker runs; `FORWARD` then.
    fn hook(&self, table: Table, from: &str) -> String {
        if from == "DOCKER-USER"
            && self
                .run(
                    "iptables",
                    &["-t", table.as_str(), "-S", "DOCKER-USER", "1"],
                    None,
                )
                .is_err()
        {
            return "FORWARD".to_string();
        }
        from.to_string()
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NetplaneError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = format!("{program} {}", args.join(" "));
        let fail = |message: String| NetplaneError {
            command: line.clone(),
            message,
        };
        tracing::debug!(command = %line, "netplane");
        let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

/// Whether the rules iptables-save printed are the ones wanted, chain by chain (it prints chains
/// in name order). iptables prints rules in its canonical form (`--probability 0.50000000000`,
/// the match module named before its options), so rules are compared by their words, loosely:
/// decimals as numbers, and `-m MODULE` words ignored.
fn same_rules(have: &[String], want: &[String]) -> bool {
    fn by_chain(lines: &[String]) -> BTreeMap<&str, Vec<&String>> {
        let mut out: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for l in lines {
            let chain = l.split_whitespace().nth(1).unwrap_or("");
            out.entry(chain).or_default().push(l);
        }
        out
    }
    let (have, want) = (by_chain(have), by_chain(want));
    have.len() == want.len()
        && have.iter().zip(&want).all(|((hc, h), (wc, w))| {
            hc == wc && h.len() == w.len() && h.iter().zip(w).all(|(a, b)| same_rule(a, b))
        })
}

fn same_rule(have: &str, want: &str) -> bool {
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut skip = false;
        for w in line.split_whitespace() {
            if skip {
                skip = false;
                continue;
            }
            if w == "-m" {
                skip = true;
                continue;
            }
            let w = match w.parse::<f64>() {
                Ok(n) if w.contains('.') && !w.contains('/') && w.matches('.').count() == 1 => {
                    format!("{n:.5}")
                }
                _ => w.to_string(),
            };
            out.push(w);
        }
        out
    }
    words(have) == words(want)
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, NetplaneError> {
    // `ip -j` prints nothing at all (not `[]`) for an empty listing on some versions.
    let text = if text.trim().is_empty() { "[]" } else { text };
    serde_json::from_str(text).map_err(|e| NetplaneError {
        command: what.to_string(),
        message: format!("unreadable output: {e}"),
    })
}

/// The peers' links, for [`shoal_core::net::plane::plan`]: each address asked once of the
/// kernel; an address the kernel cannot route to is taken as tunnelled (VXLAN finds its way once
/// a route appears).
pub fn links(netplane: &Netplane, addrs: &[Ipv4Addr]) -> BTreeMap<Ipv4Addr, Link> {
    addrs
        .iter()
        .map(|a| (*a, netplane.link_of(*a).unwrap_or(Link::Tunnel)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_canonical_forms_compare_equal() {
        let want = vec![
            "-A SHOAL-VIP -d 10.240.255.7/32 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.240.0.2".to_string(),
        ];
        let have = vec![
            "-A SHOAL-VIP -d 10.240.255.7/32 -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.240.0.2".to_string(),
        ];
        assert!(same_rules(&have, &want));
        let other = vec![have[0].replace("10.240.0.2", "10.240.0.3")];
        assert!(!same_rules(&other, &want));
        assert!(!same_rules(&[], &want));
        assert_eq!(mac_text(&[2, 0xab, 0, 1, 2, 3]), "02:ab:00:01:02:03");
    }
}
