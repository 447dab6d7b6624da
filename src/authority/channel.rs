//! Channels between contexts: bounded, typed, deep-copied, with named ends.
//!
//! An [`IsolatedChannel<T>`] connects one sender context to one receiver context. Every
//! message is serialized with postcard on `send` and decoded on receive, so the receiver
//! never shares memory with the sender: what arrives is a copy that the sender can no
//! longer touch. Byte buffers inside `T` should use `#[serde(with = "serde_bytes")]`
//! (postcard then copies them in one go instead of element by element).
//!
//! The channel is bounded twice: at most `capacity` messages queued
//! ([`IsolationError::ChannelFull`]), and at most `max_message_size` encoded bytes per
//! message ([`IsolationError::MessageTooLarge`]), checked before anything is queued.
//! Decoding is the receiver's trust boundary: postcard refuses length bombs (a claimed
//! length larger than the input fails instead of allocating), and a frame that does not
//! decode is dropped with [`IsolationError::MalformedMessage`], never a panic. Wire types
//! must not be recursive: every serde decoder tried overflows the stack on deeply nested
//! input.
//!
//! Only the named sender may send ([`IsolationError::UnauthorizedSender`]) and only the
//! named receiver may receive ([`IsolationError::UnauthorizedReceiver`]).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::ContextId;
use crate::error::{IsolationError, Result};
use crate::isolation::IsolatedContext;

/// The calling thread's current context, for `operation`.
fn current(operation: &'static str) -> Result<ContextId> {
    IsolatedContext::current().ok_or(IsolationError::NoCurrentContext { operation })
}

/// Default limit on one encoded message: 1 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// A received message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<T> {
    /// The context that sent it.
    pub sender: ContextId,
    /// When it was sent.
    pub timestamp: SystemTime,
    /// The payload, decoded from the sender's bytes.
    pub payload: T,
}

#[derive(Debug)]
struct Frame {
    sender: ContextId,
    timestamp: SystemTime,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Mutex<VecDeque<Frame>>,
    ready: Condvar,
}

/// A bounded, typed channel from one context to another. Cheap to clone (both clones are
/// the same channel).
#[derive(Debug)]
pub struct IsolatedChannel<T> {
    queue: Arc<Queue>,
    sender: ContextId,
    receiver: ContextId,
    capacity: usize,
    max_message_size: usize,
    _payload: PhantomData<fn(T) -> T>,
}

impl<T> Clone for IsolatedChannel<T> {
    fn clone(&self) -> Self {
        IsolatedChannel {
            queue: Arc::clone(&self.queue),
            _payload: PhantomData,
            ..*self
        }
    }
}

/// Encodes `value` with postcard, refusing more than `max` bytes.
pub(crate) fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>> {
    let bytes = postcard::to_allocvec(value).map_err(|e| IsolationError::MalformedMessage {
        reason: format!("encoding failed: {e}"),
    })?;
    if bytes.len() > max {
        return Err(IsolationError::MessageTooLarge {
            size: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Decodes untrusted bytes; trailing bytes are an error too (a frame is one message).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T> {
    if bytes.len() > max {
        return Err(IsolationError::MessageTooLarge {
            size: bytes.len(),
            max,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| IsolationError::MalformedMessage {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(IsolationError::MalformedMessage {
            reason: format!("{} trailing bytes after the message", rest.len()),
        });
    }
    Ok(value)
}

impl<T: Serialize + DeserializeOwned> IsolatedChannel<T> {
    /// A channel from `sender` to `receiver` holding at most `capacity` messages.
    ///
    /// # Errors
    /// `InvalidConfig` for a capacity of 0 or a sender equal to the receiver.
    pub fn new(sender: ContextId, receiver: ContextId, capacity: usize) -> Result<Self> {
        Self::with_max_message_size(sender, receiver, capacity, DEFAULT_MAX_MESSAGE)
    }

    /// Like [`new`](Self::new) with a limit on each encoded message.
    ///
    /// # Errors
    /// `InvalidConfig` for a capacity or limit of 0, or a sender equal to the receiver.
    pub fn with_max_message_size(
        sender: ContextId,
        receiver: ContextId,
        capacity: usize,
        max_message_size: usize,
    ) -> Result<Self> {
        if capacity == 0 || max_message_size == 0 {
            return Err(IsolationError::InvalidConfig(
                "a channel needs a capacity and a message size limit above 0".into(),
            ));
        }
        if sender == receiver {
            return Err(IsolationError::InvalidConfig(format!(
                "channel from {sender} to itself: a channel connects two contexts"
            )));
        }
        Ok(IsolatedChannel {
            queue: Arc::default(),
            sender,
            receiver,
            capacity,
            max_message_size,
            _payload: PhantomData,
        })
    }

    /// The sending context.
    pub fn sender(&self) -> ContextId {
        self.sender
    }

    /// The receiving context.
    pub fn receiver(&self) -> ContextId {
        self.receiver
    }

    /// Messages waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Frame>> {
        self.queue.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The seed's send: a deep copy of `data`, sent as the context the calling thread is
    /// executing in ([`IsolatedContext::execute`](IsolatedContext::execute)). The
    /// sender is the context you hold and run in, not an id you pass, which makes it a
    /// little stronger than [`send_as`](Self::send_as).
    ///
    /// # Errors
    /// `NoCurrentContext` outside `execute`; otherwise as [`send_as`](Self::send_as).
    pub fn send(&self, data: T) -> Result<()> {
        self.send_as(current("send")?, &data)
    }

    /// The seed's receive: the oldest message's payload, received as the current context
    /// (see [`send`](Self::send)), without waiting.
    ///
    /// # Errors
    /// `NoCurrentContext` outside `execute`; otherwise as [`try_recv`](Self::try_recv).
    pub fn receive(&self) -> Result<T> {
        Ok(self.try_recv(current("receive")?)?.payload)
    }

    /// Sends a deep copy of `value` as context `from`.
    ///
    /// # Errors
    /// `UnauthorizedSender` when `from` is not the sender; `MessageTooLarge`; `ChannelFull`
    /// when `capacity` messages are waiting (nothing is queued then).
    pub fn send_as(&self, from: ContextId, value: &T) -> Result<()> {
        if from != self.sender {
            return Err(IsolationError::UnauthorizedSender(from));
        }
        let bytes = encode(value, self.max_message_size)?;
        let mut q = self.lock();
        if q.len() >= self.capacity {
            return Err(IsolationError::ChannelFull {
                capacity: self.capacity,
            });
        }
        q.push_back(Frame {
            sender: from,
            timestamp: SystemTime::now(),
            bytes,
        });
        drop(q);
        self.queue.ready.notify_one();
        Ok(())
    }

    /// Takes the oldest message without waiting.
    ///
    /// # Errors
    /// `UnauthorizedReceiver`; `ChannelEmpty`; `MalformedMessage` (the frame is dropped).
    pub fn try_recv(&self, by: ContextId) -> Result<Message<T>> {
        if by != self.receiver {
            return Err(IsolationError::UnauthorizedReceiver(by));
        }
        let frame = self
            .lock()
            .pop_front()
            .ok_or(IsolationError::ChannelEmpty)?;
        self.open(frame)
    }

    /// Waits up to `timeout` for a message.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv); `ChannelEmpty` when nothing arrived in time.
    pub fn recv_timeout(&self, by: ContextId, timeout: Duration) -> Result<Message<T>> {
        if by != self.receiver {
            return Err(IsolationError::UnauthorizedReceiver(by));
        }
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        loop {
            if let Some(frame) = q.pop_front() {
                drop(q);
                return self.open(frame);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(IsolationError::ChannelEmpty);
            }
            q = self
                .queue
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn open(&self, f: Frame) -> Result<Message<T>> {
        Ok(Message {
            sender: f.sender,
            timestamp: f.timestamp,
            payload: decode(&f.bytes, self.max_message_size)?,
        })
    }
}
