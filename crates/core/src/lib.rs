//! Echo's domain vocabulary, shared by every service: the [`Clock`] that all
//! expiry decisions read, the [`audit`] event every security-relevant
//! action produces, the OAuth [`Scope`], and the one way locks are taken
//! ([`sync`]). Nothing here performs I/O or knows about HTTP.

pub mod audit;
mod clock;
mod scope;
pub mod sync;

pub use clock::{Clock, ManualClock, SystemClock};
pub use scope::Scope;
