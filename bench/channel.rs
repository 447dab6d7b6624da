//! Channels and capabilities, each against a peer measured in the same run.
//!
//! - Round trip between two processes (this benchmark re-executes itself as the echo
//!   child): a nebula cross-process channel (SEQPACKET socketpair, framing, credits,
//!   postcard, size checks) vs a raw SEQPACKET socketpair between the same two processes
//!   echoing the same bytes. 64 B and 64 KiB payloads; rounds interleaved; medians.
//! - In-process deep copy: `IsolatedChannel` send + receive of a 64 KiB buffer vs a plain
//!   `Vec` clone (memcpy), in MiB/s.
//! - Capability check vs a bare `HashMap` lookup of the same id.
//!
//! Run: `make bench` (or `cargo bench --bench channel`).

use std::collections::HashMap;
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nebula_memory::isolation::ipc::{ChannelLimits, ChannelReceiver, ChannelSender, channel};
use nebula_memory::isolation::{
    CapPermissions, CapabilitySystem, ContextId, Grant, IsolatedChannel,
};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, recv, send, socketpair,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone)]
struct Payload(#[serde(with = "serde_bytes")] Vec<u8>);

const PARENT: u64 = 7_000_001;
const CHILD: u64 = 7_000_002;
const ROUNDS: usize = 2000;
const LIMITS: ChannelLimits = ChannelLimits {
    capacity: 4,
    max_message_size: 128 * 1024,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Ok(fds) = std::env::var("NEBULA_BENCH_CHILD") {
        echo_child(&fds);
        return;
    }
    let (p, c) = (ContextId::from_raw(PARENT), ContextId::from_raw(CHILD));
    let (to_child, child_rx) = channel::<Payload>(p, c, LIMITS).expect("channel");
    let (child_tx, from_child) = channel::<Payload>(c, p, LIMITS).expect("channel");
    let (raw_parent, raw_child) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let fds = [
        child_rx.inheritable_fd().unwrap(),
        child_tx.inheritable_fd().unwrap(),
        {
            rustix::io::fcntl_setfd(&raw_child, rustix::io::FdFlags::empty()).unwrap();
            raw_child.as_raw_fd()
        },
    ];
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "NEBULA_BENCH_CHILD",
            format!("{},{},{}", fds[0], fds[1], fds[2]),
        )
        .spawn()
        .expect("echo child");
    drop((child_rx, child_tx, raw_child));

    println!("channel: round trips between two processes, median of {ROUNDS}, microseconds");
    println!(
        "{:<8} {:>14} {:>18} {:>7}",
        "payload", "nebula channel", "raw socketpair", "ratio"
    );
    let mut buf = vec![0u8; 256 * 1024];
    for size in [64usize, 64 * 1024] {
        let msg = Payload(vec![0x5A; size]);
        let (mut neb, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            to_child.send(p, &msg).unwrap();
            let back = from_child.recv_timeout(p, Duration::from_secs(10)).unwrap();
            neb.push(t.elapsed().as_secs_f64() * 1e6);
            black_box(back);
            let t = Instant::now();
            send(&raw_parent, &msg.0, SendFlags::empty()).unwrap();
            let (_, n) = recv(&raw_parent, &mut buf[..], RecvFlags::empty()).unwrap();
            raw.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(n, size);
        }
        let (n, r) = (median(neb), median(raw));
        println!(
            "{:<8} {:>14.2} {:>18.2} {:>6.2}x",
            if size == 64 { "64 B" } else { "64 KiB" },
            n,
            r,
            n / r
        );
    }
    drop(to_child);
    drop(raw_parent);
    child.wait().unwrap();

    // In-process deep copy.
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    let ch = IsolatedChannel::<Payload>::with_max_message_size(a, b, 4, 128 * 1024).unwrap();
    let msg = Payload(vec![7u8; 64 * 1024]);
    let (mut neb, mut copy) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        ch.send_as(a, &msg).unwrap();
        black_box(ch.try_recv(b).unwrap());
        neb.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(msg.0.clone());
        copy.push(t.elapsed().as_secs_f64());
    }
    let mib = 64.0 / 1024.0;
    let (n, c) = (mib / median(neb), mib / median(copy));
    println!(
        "\nin-process deep copy of 64 KiB: IsolatedChannel {n:.0} MiB/s, Vec clone {c:.0} MiB/s, ratio {:.2}x of memcpy speed",
        n / c
    );

    // Capability checks.
    let caps = CapabilitySystem::new();
    let owner = ContextId::fresh();
    let ids: Vec<u64> = (0..1000)
        .map(|i| {
            caps.grant(Grant::new(owner, format!("r{i}"), CapPermissions::READ))
                .unwrap()
        })
        .collect();
    let map: HashMap<u64, u32> = ids.iter().map(|&i| (i, 1)).collect();
    let n = 1_000_000;
    let t = Instant::now();
    for i in 0..n {
        black_box(caps.check(ids[i % ids.len()], owner, CapPermissions::READ)).unwrap();
    }
    let check = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let t = Instant::now();
    for i in 0..n {
        black_box(map.get(&ids[i % ids.len()]));
    }
    let lookup = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!(
        "capability check {check:.1} ns vs HashMap lookup {lookup:.1} ns: {:.1}x",
        check / lookup
    );
}

fn echo_child(fds: &str) {
    let v: Vec<i32> = fds.split(',').map(|x| x.parse().unwrap()).collect();
    let (p, c) = (ContextId::from_raw(PARENT), ContextId::from_raw(CHILD));
    // SAFETY: the parent passed these numbers for this process to own; each is adopted
    // once, here.
    #[allow(unsafe_code)]
    let (rx, tx) = unsafe {
        (
            ChannelReceiver::<Payload>::from_inherited(v[0], p, c, LIMITS).unwrap(),
            ChannelSender::<Payload>::from_inherited(v[1], c, p, LIMITS).unwrap(),
        )
    };
    let raw = adopt(v[2]);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match rx.recv_timeout(c, Duration::from_secs(60)) {
            Ok(m) => tx.send(c, &m.payload).unwrap(),
            Err(_) => return,
        }
        let (_, n) = recv(&raw, &mut buf[..], RecvFlags::empty()).unwrap();
        if n == 0 {
            return;
        }
        send(&raw, &buf[..n], SendFlags::empty()).unwrap();
    }
}

#[allow(unsafe_code)]
fn adopt(raw: i32) -> OwnedFd {
    // SAFETY: the parent passed this inherited descriptor number for this process to own;
    // it is adopted exactly once, here.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let _ = fd.as_fd();
    fd
}
