//! The rules of the service. Resolvers call these; these call storage and auth.

pub mod accounts;

pub use accounts::{AccountService, AccountSettings, SignedIn, Viewer};
