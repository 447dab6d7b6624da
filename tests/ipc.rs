//! Cross-process channels: a socketpair held by two processes, bounded, with untrusted bytes.

use std::os::fd::AsFd;
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::ContextId;
use nebula_memory::isolation::ipc::{ChannelLimits, ChannelReceiver, ChannelSender, channel};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Req {
    n: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

const PARENT: u64 = 1_000_001;
const CHILD: u64 = 1_000_002;

#[test]
fn bounded_exactly_and_credits_come_back() {
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    let (tx, rx) = channel::<Req>(a, b, ChannelLimits::new(3)).unwrap();
    for n in 0..3 {
        tx.send(
            a,
            &Req {
                n,
                data: vec![u8::try_from(n).unwrap(); 100],
            },
        )
        .unwrap();
    }
    assert!(matches!(
        tx.send(a, &Req { n: 9, data: vec![] }),
        Err(IsolationError::ChannelFull { capacity: 3 })
    ));
    assert!(matches!(
        tx.send(b, &Req { n: 9, data: vec![] }),
        Err(IsolationError::UnauthorizedSender(_))
    ));
    assert!(matches!(
        rx.try_recv(a),
        Err(IsolationError::UnauthorizedReceiver(_))
    ));
    let m = rx.try_recv(b).unwrap();
    assert_eq!((m.sender, m.payload.n), (a, 0));
    // One consumed: one more fits, and only one.
    tx.send(a, &Req { n: 3, data: vec![] }).unwrap();
    assert!(matches!(
        tx.send(a, &Req { n: 4, data: vec![] }),
        Err(IsolationError::ChannelFull { .. })
    ));
    for want in 1..4 {
        assert_eq!(
            rx.recv_timeout(b, Duration::from_secs(5))
                .unwrap()
                .payload
                .n,
            want
        );
    }
    assert!(matches!(rx.try_recv(b), Err(IsolationError::ChannelEmpty)));
    assert_eq!(
        {
            tx.send(a, &Req { n: 5, data: vec![] }).unwrap();
            tx.in_flight()
        },
        1
    );
}

#[test]
fn oversized_and_garbage_frames_are_refused_and_credited() {
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    let limits = ChannelLimits {
        capacity: 2,
        max_message_size: 256,
    };
    let (tx, rx) = channel::<Req>(a, b, limits).unwrap();
    assert!(matches!(
        tx.send(
            a,
            &Req {
                n: 0,
                data: vec![0; 1000]
            }
        ),
        Err(IsolationError::MessageTooLarge { .. })
    ));
    // A hostile peer writes raw frames straight into the socket.
    let raw = tx.as_fd();
    for frame in [
        &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..],
        &[7u8][..],
        &vec![1u8; 4000][..],
    ] {
        rustix::net::send(raw, frame, rustix::net::SendFlags::empty()).unwrap();
        let err = rx.try_recv(b).unwrap_err();
        assert!(
            matches!(
                err,
                IsolationError::MalformedMessage { .. } | IsolationError::MessageTooLarge { .. }
            ),
            "{err}"
        );
    }
    // The channel still works, and the refused frames did not eat the window.
    tx.send(
        a,
        &Req {
            n: 1,
            data: vec![1],
        },
    )
    .unwrap();
    tx.send(
        a,
        &Req {
            n: 2,
            data: vec![2],
        },
    )
    .unwrap();
    assert_eq!(rx.try_recv(b).unwrap().payload.n, 1);
}

#[test]
fn a_dead_peer_is_seen_as_closed() {
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    let (tx, rx) = channel::<u32>(a, b, ChannelLimits::new(4)).unwrap();
    drop(tx);
    assert!(matches!(
        rx.recv_timeout(b, Duration::from_secs(5)),
        Err(IsolationError::ChannelClosed)
    ));
    let (tx, rx) = channel::<u32>(a, b, ChannelLimits::new(4)).unwrap();
    drop(rx);
    assert!(matches!(tx.send(a, &1), Err(IsolationError::ChannelClosed)));
}

#[test]
fn round_trip_with_a_child_process() {
    let (p, c) = (ContextId::from_raw(PARENT), ContextId::from_raw(CHILD));
    let limits = ChannelLimits::new(8);
    let (to_child, child_rx) = channel::<Req>(p, c, limits).unwrap();
    let (child_tx, from_child) = channel::<Req>(c, p, limits).unwrap();
    let rx_fd = child_rx.inheritable_fd().unwrap();
    let tx_fd = child_tx.inheritable_fd().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_echo_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER_FDS", format!("{rx_fd},{tx_fd}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child_rx);
    drop(child_tx);
    for n in 0..20u64 {
        let byte = u8::try_from(n).unwrap();
        to_child
            .send(
                p,
                &Req {
                    n,
                    data: vec![byte; 64 * 1024 - 64],
                },
            )
            .unwrap();
        let back = from_child.recv_timeout(p, Duration::from_secs(30)).unwrap();
        assert_eq!(back.sender, c);
        assert_eq!(back.payload.n, n * 2);
        assert!(back.payload.data.iter().all(|&x| x == byte));
    }
    drop(to_child);
    let status = child.wait().unwrap();
    assert!(status.success(), "echo child: {status}");
}

#[test]
#[ignore = "helper: run by round_trip_with_a_child_process in a child process"]
fn helper_echo_child() {
    let Ok(fds) = std::env::var("NEBULA_HELPER_FDS") else {
        return;
    };
    let (rx, tx) = fds.split_once(',').unwrap();
    let (p, c) = (ContextId::from_raw(PARENT), ContextId::from_raw(CHILD));
    let limits = ChannelLimits::new(8);
    // SAFETY: the parent passed these two numbers in NEBULA_HELPER_FDS for this process to
    // own; each is adopted once, here.
    #[allow(unsafe_code)]
    let (rx, tx) = unsafe {
        (
            ChannelReceiver::<Req>::from_inherited(rx.parse().unwrap(), p, c, limits).unwrap(),
            ChannelSender::<Req>::from_inherited(tx.parse().unwrap(), c, p, limits).unwrap(),
        )
    };
    loop {
        match rx.recv_timeout(c, Duration::from_secs(30)) {
            Ok(m) => tx
                .send(
                    c,
                    &Req {
                        n: m.payload.n * 2,
                        data: m.payload.data,
                    },
                )
                .unwrap(),
            Err(IsolationError::ChannelClosed) => return,
            Err(e) => panic!("{e}"),
        }
    }
}
