//! The rules of the service. Resolvers call these; these call storage and auth.

pub mod accounts;
pub mod audit;
pub mod throttle;

pub use accounts::{AccountService, AccountSettings, SignedIn, Viewer};
pub use throttle::Throttle;

/// The client's address: the socket peer, or what a trusted proxy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);
