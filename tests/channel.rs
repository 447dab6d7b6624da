//! In-process channels: authorization, bounds, deep copy, timeouts, hostile bytes.

use std::time::{Duration, Instant};

use nebula_memory::IsolationError;
use nebula_memory::isolation::ContextId;
use nebula_memory::isolation::channel::{IsolatedChannel, decode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

fn pair() -> (ContextId, ContextId) {
    (ContextId::fresh(), ContextId::fresh())
}

#[test]
fn only_the_named_ends_may_use_it() {
    let (a, b) = pair();
    let intruder = ContextId::fresh();
    let ch = IsolatedChannel::<u32>::new(a, b, 4).unwrap();
    assert!(matches!(ch.send_as(b, &1), Err(IsolationError::UnauthorizedSender(x)) if x == b));
    assert!(matches!(
        ch.send_as(intruder, &1),
        Err(IsolationError::UnauthorizedSender(_))
    ));
    ch.send_as(a, &7).unwrap();
    assert!(matches!(ch.try_recv(a), Err(IsolationError::UnauthorizedReceiver(x)) if x == a));
    assert!(matches!(
        ch.recv_timeout(intruder, Duration::ZERO),
        Err(IsolationError::UnauthorizedReceiver(_))
    ));
    let m = ch.try_recv(b).unwrap();
    assert_eq!((m.sender, m.payload), (a, 7));
    assert!(IsolatedChannel::<u32>::new(a, a, 1).is_err());
    assert!(IsolatedChannel::<u32>::new(a, b, 0).is_err());
}

#[test]
fn bounded_in_messages_and_bytes() {
    let (a, b) = pair();
    let ch = IsolatedChannel::<Job>::with_max_message_size(a, b, 2, 1024).unwrap();
    let job = |n: usize| Job {
        id: n as u64,
        name: "j".into(),
        data: vec![1; n],
    };
    ch.send_as(a, &job(10)).unwrap();
    ch.send_as(a, &job(20)).unwrap();
    assert!(matches!(
        ch.send_as(a, &job(30)),
        Err(IsolationError::ChannelFull { capacity: 2 })
    ));
    assert_eq!(ch.len(), 2);
    assert_eq!(ch.try_recv(b).unwrap().payload, job(10));
    match ch.send_as(a, &job(2000)) {
        Err(IsolationError::MessageTooLarge { size, max: 1024 }) => assert!(size > 2000),
        other => panic!("{other:?}"),
    }
    assert_eq!(ch.len(), 1, "a refused message is not queued");
    assert_eq!(ch.try_recv(b).unwrap().payload, job(20));
    assert!(matches!(ch.try_recv(b), Err(IsolationError::ChannelEmpty)));
}

#[test]
fn messages_are_deep_copies_with_sender_and_time() {
    let (a, b) = pair();
    let ch = IsolatedChannel::<Job>::new(a, b, 1).unwrap();
    let mut original = Job {
        id: 1,
        name: "first".into(),
        data: vec![9; 64],
    };
    let before = std::time::SystemTime::now();
    ch.send_as(a, &original).unwrap();
    original.data.fill(0);
    original.name.push_str("-changed");
    let m = ch.try_recv(b).unwrap();
    assert_eq!(
        m.payload,
        Job {
            id: 1,
            name: "first".into(),
            data: vec![9; 64]
        }
    );
    assert_eq!(m.sender, a);
    assert!(m.timestamp >= before);
}

#[test]
fn blocking_receive_waits_and_times_out() {
    let (a, b) = pair();
    let ch = IsolatedChannel::<String>::new(a, b, 1).unwrap();
    let t = Instant::now();
    assert!(matches!(
        ch.recv_timeout(b, Duration::from_millis(50)),
        Err(IsolationError::ChannelEmpty)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    let tx = ch.clone();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        tx.send_as(a, &"late".to_string()).unwrap();
    });
    assert_eq!(
        ch.recv_timeout(b, Duration::from_secs(10)).unwrap().payload,
        "late"
    );
    h.join().unwrap();
}

#[test]
fn hostile_bytes_are_refused_not_trusted() {
    // A length prefix claiming 2^40 bytes in a 9-byte frame.
    let bomb = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0x01];
    assert!(matches!(
        decode::<Vec<u8>>(&bomb, 1 << 20),
        Err(IsolationError::MalformedMessage { .. })
    ));
    // Truncated and trailing input.
    let good = postcard::to_allocvec(&Job {
        id: 3,
        name: "x".into(),
        data: vec![1, 2, 3],
    })
    .unwrap();
    assert!(decode::<Job>(&good[..good.len() - 1], 1 << 20).is_err());
    let mut long = good.clone();
    long.push(0);
    assert!(
        matches!(decode::<Job>(&long, 1 << 20), Err(IsolationError::MalformedMessage { reason }) if reason.contains("trailing"))
    );
    assert!(matches!(
        decode::<Job>(&good, 4),
        Err(IsolationError::MessageTooLarge { .. })
    ));
    // Random garbage never panics.
    let mut x = 0x2545F4914F6CDD1Du64;
    for _ in 0..20_000 {
        let len = (x % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let _ = decode::<Job>(&bytes, 1 << 20);
        let _ = decode::<Vec<String>>(&bytes, 1 << 20);
    }
}
