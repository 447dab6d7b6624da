//! Channels across process contexts: a `SOCK_SEQPACKET` socketpair held only by the two
//! ends. The descriptor is the capability: a process without it cannot send or receive.
//!
//! ```text
//!   sender process                         receiver process
//!   ChannelSender<T> --- frame: [v1][sent_at ns][postcard payload] --> ChannelReceiver<T>
//!                    <-- credit: total messages consumed (u64) ------
//! ```
//!
//! - One frame is one message (SEQPACKET keeps boundaries). The receiver reads with
//!   `MSG_TRUNC`, so a frame larger than its limit is detected (and dropped by the kernel)
//!   instead of being read in pieces.
//! - Bounded exactly: the sender counts what it sent and the receiver returns the running
//!   total it consumed; `sent - consumed >= capacity` is [`IsolationError::ChannelFull`]. A
//!   credit lost to a full socket buffer is made good by the next one (totals, not deltas).
//! - The bytes are untrusted: size-limited, decoded with postcard (no length bombs), a
//!   frame that does not decode is dropped and credited, and reported as
//!   [`IsolationError::MalformedMessage`]. The sender's identity is the channel's named
//!   sender (the fd says who is on the other side), never a field from the wire; the
//!   timestamp is the sender's claim.
//! - Non-blocking descriptors; waiting is `poll(2)`, so a dead peer is seen as
//!   [`IsolationError::ChannelClosed`] rather than a hang.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, recv, send, socketpair,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::channel::{DEFAULT_MAX_MESSAGE, Message, decode};
use crate::base::ContextId;
use crate::error::{IsolationError, Result};

const VERSION: u8 = 1;
const HEADER: usize = 9;

fn sys(op: &str, e: Errno) -> IsolationError {
    IsolationError::system(op, e.into())
}

/// The limits both ends agree on.
#[derive(Clone, Copy, Debug)]
pub struct ChannelLimits {
    /// Messages in flight at most.
    pub capacity: usize,
    /// Largest encoded message in bytes.
    pub max_message_size: usize,
}

impl ChannelLimits {
    /// `capacity` messages of up to [`DEFAULT_MAX_MESSAGE`] bytes.
    pub fn new(capacity: usize) -> Self {
        ChannelLimits {
            capacity,
            max_message_size: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Creates a cross-process channel from `sender` to `receiver`: two ends, each to be
/// moved into its process (inherit the fd, or send it with SCM_RIGHTS).
///
/// # Errors
/// `InvalidConfig` for a zero capacity or limit or a channel to itself; `System` when
/// `socketpair` fails.
pub fn channel<T: Serialize + DeserializeOwned>(
    sender: ContextId,
    receiver: ContextId,
    limits: ChannelLimits,
) -> Result<(ChannelSender<T>, ChannelReceiver<T>)> {
    if limits.capacity == 0 || limits.max_message_size == 0 || sender == receiver {
        return Err(IsolationError::InvalidConfig(
            "a cross-process channel needs two different contexts, a capacity and a message limit above 0".into(),
        ));
    }
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| sys("socketpair(AF_UNIX, SOCK_SEQPACKET)", e))?;
    // Room for a full window of frames, so an allowed send never blocks on the buffer.
    let want = limits
        .capacity
        .saturating_mul(limits.max_message_size + HEADER + 512)
        .min(8 << 20);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&a, want);
    Ok((
        ChannelSender::from_fd(a, sender, receiver, limits),
        ChannelReceiver::from_fd(b, sender, receiver, limits),
    ))
}

/// The sending end.
#[derive(Debug)]
pub struct ChannelSender<T> {
    fd: OwnedFd,
    sender: ContextId,
    receiver: ContextId,
    limits: ChannelLimits,
    /// (sent, consumed as last credited).
    counts: Mutex<(u64, u64)>,
    _t: PhantomData<fn(T)>,
}

/// The receiving end.
#[derive(Debug)]
pub struct ChannelReceiver<T> {
    fd: OwnedFd,
    sender: ContextId,
    receiver: ContextId,
    limits: ChannelLimits,
    /// Frames consumed so far, and the receive buffer (allocated once).
    state: Mutex<(u64, Vec<u8>)>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize> ChannelSender<T> {
    /// Rebuilds a sending end from its descriptor (in the process it was handed to).
    pub fn from_fd(
        fd: OwnedFd,
        sender: ContextId,
        receiver: ContextId,
        limits: ChannelLimits,
    ) -> Self {
        ChannelSender {
            fd,
            sender,
            receiver,
            limits,
            counts: Mutex::new((0, 0)),
            _t: PhantomData,
        }
    }

    /// Takes an inherited descriptor number (from the parent) as a sending end. The number is
    /// checked to be open and made close-on-exec again; [`from_fd`](Self::from_fd) takes an
    /// `OwnedFd` without any of this.
    ///
    /// # Safety
    /// `raw` must have been handed to this process for it to own (the parent's end of a
    /// channel, inherited across `exec`), and nothing else in the process may own or close
    /// it: the returned end closes it when dropped.
    ///
    /// # Errors
    /// `System` when `raw` is not an open descriptor, or is 0, 1 or 2.
    #[allow(unsafe_code)] // an unsafe door: the caller proves it owns the number
    pub unsafe fn from_inherited(
        raw: RawFd,
        sender: ContextId,
        receiver: ContextId,
        limits: ChannelLimits,
    ) -> Result<Self> {
        // SAFETY: the caller owns `raw` (this function's contract).
        Ok(Self::from_fd(
            unsafe { adopt(raw) }?,
            sender,
            receiver,
            limits,
        ))
    }

    /// Messages sent and not yet consumed, as last credited.
    pub fn in_flight(&self) -> usize {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // At most `capacity` (a usize): send refuses past it.
        usize::try_from(c.0 - c.1).unwrap_or(usize::MAX)
    }

    fn drain_credits(&self, counts: &mut (u64, u64)) -> Result<()> {
        let mut buf = [0u8; 8];
        loop {
            match recv(&self.fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((_, 8)) => {
                    let consumed = u64::from_le_bytes(buf);
                    // A credit beyond what was sent is a lie from the other side: ignore it.
                    if consumed <= counts.0 && consumed > counts.1 {
                        counts.1 = consumed;
                    }
                }
                Ok((_, 0)) => return Err(IsolationError::ChannelClosed),
                Ok(_) => {} // malformed credit: ignored
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(Errno::CONNRESET) => return Err(IsolationError::ChannelClosed),
                Err(e) => return Err(sys("reading channel credits", e)),
            }
        }
    }

    /// Sends a deep copy of `value` as context `from`, without blocking.
    ///
    /// # Errors
    /// `UnauthorizedSender`; `MessageTooLarge`; `ChannelFull` when `capacity` messages are
    /// in flight; `ChannelClosed` when the receiver is gone.
    pub fn send(&self, from: ContextId, value: &T) -> Result<()> {
        if from != self.sender {
            return Err(IsolationError::UnauthorizedSender(from));
        }
        // Encode straight behind the header: one buffer, one copy.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        let mut frame = Vec::with_capacity(HEADER + 64);
        frame.push(VERSION);
        frame.extend_from_slice(&now.to_le_bytes());
        let frame =
            postcard::to_extend(value, frame).map_err(|e| IsolationError::MalformedMessage {
                reason: format!("encoding failed: {e}"),
            })?;
        if frame.len() - HEADER > self.limits.max_message_size {
            return Err(IsolationError::MessageTooLarge {
                size: frame.len() - HEADER,
                max: self.limits.max_message_size,
            });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        self.drain_credits(&mut counts)?;
        if counts.0 - counts.1 >= self.limits.capacity as u64 {
            return Err(IsolationError::ChannelFull {
                capacity: self.limits.capacity,
            });
        }
        loop {
            match send(&self.fd, &frame, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => {
                    return Err(IsolationError::ChannelFull {
                        capacity: self.limits.capacity,
                    });
                }
                Err(Errno::PIPE | Errno::CONNRESET) => return Err(IsolationError::ChannelClosed),
                Err(e) => return Err(sys("sending a channel frame", e)),
            }
        }
        counts.0 += 1;
        Ok(())
    }

    /// The receiving context.
    pub fn receiver(&self) -> ContextId {
        self.receiver
    }
}

/// # Safety
/// As [`crate::sys::fd::adopt_inherited`]: the process owns `raw` and nothing else does.
#[allow(unsafe_code)]
unsafe fn adopt(raw: RawFd) -> Result<OwnedFd> {
    // SAFETY: passed on from the caller's contract.
    unsafe { crate::sys::fd::adopt_inherited(raw) }
        .map_err(|e| IsolationError::system(format!("adopting inherited fd {raw}"), e))
}

fn inheritable(fd: &OwnedFd) -> Result<RawFd> {
    use std::os::fd::AsRawFd;
    crate::sys::fd::inherit_across_exec(fd)
        .map_err(|e| IsolationError::system("clearing FD_CLOEXEC on a channel end", e))?;
    Ok(fd.as_raw_fd())
}

impl<T> ChannelSender<T> {
    /// Lets a child started with exec inherit this end (clears `FD_CLOEXEC`) and returns the
    /// descriptor number to hand it (the child rebuilds the end with
    /// [`from_inherited`](Self::from_inherited)). Drop this end in the parent afterwards.
    ///
    /// # Errors
    /// `System` when `fcntl` fails.
    pub fn inheritable_fd(&self) -> Result<RawFd> {
        inheritable(&self.fd)
    }
}

impl<T> ChannelReceiver<T> {
    /// Like [`ChannelSender::inheritable_fd`], for the receiving end.
    ///
    /// # Errors
    /// `System` when `fcntl` fails.
    pub fn inheritable_fd(&self) -> Result<RawFd> {
        inheritable(&self.fd)
    }
}

impl<T> AsFd for ChannelSender<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<T> AsFd for ChannelReceiver<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<T: DeserializeOwned> ChannelReceiver<T> {
    /// Rebuilds a receiving end from its descriptor.
    pub fn from_fd(
        fd: OwnedFd,
        sender: ContextId,
        receiver: ContextId,
        limits: ChannelLimits,
    ) -> Self {
        let buf = vec![0u8; limits.max_message_size + HEADER + 1];
        ChannelReceiver {
            fd,
            sender,
            receiver,
            limits,
            state: Mutex::new((0, buf)),
            _t: PhantomData,
        }
    }

    /// Takes an inherited descriptor number (from the parent) as a receiving end. The number is
    /// checked to be open and made close-on-exec again; [`from_fd`](Self::from_fd) takes an
    /// `OwnedFd` without any of this.
    ///
    /// # Safety
    /// `raw` must have been handed to this process for it to own (the parent's end of a
    /// channel, inherited across `exec`), and nothing else in the process may own or close
    /// it: the returned end closes it when dropped.
    ///
    /// # Errors
    /// `System` when `raw` is not an open descriptor, or is 0, 1 or 2.
    #[allow(unsafe_code)] // an unsafe door: the caller proves it owns the number
    pub unsafe fn from_inherited(
        raw: RawFd,
        sender: ContextId,
        receiver: ContextId,
        limits: ChannelLimits,
    ) -> Result<Self> {
        // SAFETY: the caller owns `raw` (this function's contract).
        Ok(Self::from_fd(
            unsafe { adopt(raw) }?,
            sender,
            receiver,
            limits,
        ))
    }

    /// The sending context.
    pub fn sender(&self) -> ContextId {
        self.sender
    }

    /// Takes one message without waiting.
    ///
    /// # Errors
    /// `UnauthorizedReceiver`; `ChannelEmpty`; `ChannelClosed`; `MessageTooLarge` or
    /// `MalformedMessage` for a frame that broke the rules (it is dropped and credited).
    pub fn try_recv(&self, by: ContextId) -> Result<Message<T>> {
        if by != self.receiver {
            return Err(IsolationError::UnauthorizedReceiver(by));
        }
        let max = self.limits.max_message_size + HEADER;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (consumed, buf) = &mut *state;
        let n = loop {
            match recv(
                &self.fd,
                &mut buf[..],
                RecvFlags::DONTWAIT | RecvFlags::TRUNC,
            ) {
                Ok((_, 0)) => return Err(IsolationError::ChannelClosed),
                Ok((_, n)) => break n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Err(IsolationError::ChannelEmpty),
                Err(Errno::CONNRESET) => return Err(IsolationError::ChannelClosed),
                Err(e) => return Err(sys("receiving a channel frame", e)),
            }
        };
        // Credit every frame taken off the socket, good or bad, so refused frames never eat
        // the window. Best effort: a credit that does not fit now is carried by the next
        // (it is a running total).
        *consumed += 1;
        let _ = send(
            &self.fd,
            &consumed.to_le_bytes(),
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        );
        if n > max {
            return Err(IsolationError::MessageTooLarge {
                size: n - HEADER.min(n),
                max: self.limits.max_message_size,
            });
        }
        let frame = &buf[..n];
        if n < HEADER || frame[0] != VERSION {
            return Err(IsolationError::MalformedMessage {
                reason: format!("bad frame header ({n} bytes)"),
            });
        }
        let nanos = u64::from_le_bytes(frame[1..HEADER].try_into().expect("8 bytes"));
        let payload = decode(&frame[HEADER..], self.limits.max_message_size)?;
        Ok(Message {
            sender: self.sender,
            timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
            payload,
        })
    }

    /// Waits up to `timeout` for a message (`poll(2)`, so a dead sender ends the wait).
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv); `ChannelEmpty` when nothing arrived in time.
    pub fn recv_timeout(&self, by: ContextId, timeout: Duration) -> Result<Message<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_recv(by) {
                Err(IsolationError::ChannelEmpty) => {}
                other => return other,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IsolationError::ChannelEmpty);
            }
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(sys("poll on a channel", e)),
            }
        }
    }
}
