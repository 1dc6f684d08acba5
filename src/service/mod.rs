//! The rules of the service. Resolvers call these; these call storage and auth.

pub mod accounts;
pub mod audit;
pub mod throttle;

pub use accounts::{AccountService, AccountSettings, MailSettings, SignedIn, Viewer};
pub use throttle::Throttle;
