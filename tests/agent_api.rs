//! The local API socket under hostile clients: a length prefix that claims a huge frame costs
//! nothing until its bytes arrive, idle connections are dropped, and the number of connections
//! is bounded; the agent keeps answering throughout.

mod common;

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use common::{free_port_pair, wait_for, Agent};

/// A memory figure of process `pid` from /proc (`VmRSS`, `VmData`), in KiB.
fn mem_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn huge_length_prefixes_cost_no_memory_and_the_agent_keeps_answering() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port_pair(&["127.0.0.1"]);
    let mut agent = Agent::new(
        root.path(),
        "n1",
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[],
    );
    agent.start();
    assert!(wait_for(Duration::from_secs(10), || agent.nodes().is_some()).is_some());
    let before = mem_kib(agent.pid(), "VmRSS:");
    // Reserved, not just touched: a zeroed 16 MiB buffer is mostly untouched pages, which RSS
    // does not count.
    let data_before = mem_kib(agent.pid(), "VmData:");
    let socket = agent.data_dir.join("shoal.sock");
    // 100 connections, each announcing a 16 MiB frame and sending 10 bytes of it. Most are
    // refused beyond the connection bound; none may make the agent reserve the 16 MiB.
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = UnixStream::connect(&socket).unwrap();
        let _ = s.write_all(&(16u32 * 1024 * 1024).to_be_bytes());
        let _ = s.write_all(&[0u8; 10]);
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = mem_kib(agent.pid(), "VmRSS:");
    let data_during = mem_kib(agent.pid(), "VmData:");
    assert!(
        during < before + 32 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    assert!(
        data_during < data_before + 128 * 1024,
        "reserved memory grew from {data_before} KiB to {data_during} KiB"
    );
    // The agent still answers the CLI while those hang.
    drop(held.drain(..50));
    assert!(agent.nodes().is_some(), "the agent stopped answering");
    // A connection that sends nothing is closed after the read timeout.
    let mut idle = UnixStream::connect(&socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    let started = std::time::Instant::now();
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection is closed, not answered");
    assert!(started.elapsed() < Duration::from_secs(15));
    println!(
        "RSS {before} KiB idle, {during} KiB with 100 hostile connections; \
         reserved {data_before} KiB, {data_during} KiB"
    );
}
