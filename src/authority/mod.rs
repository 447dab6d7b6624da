//! Authority between contexts: capabilities (grants with uses and expiry), in-process
//! channels and cross-process channels. Their public paths are under
//! `nebula_memory::isolation` (`isolation::capability`, `isolation::channel`,
//! `isolation::ipc`, and the seed's `isolation::{CapabilitySystem, IsolatedChannel}`).

pub mod capability;
pub mod channel;
pub mod ipc;
