//! Echo's domain vocabulary, shared by every service: the [`Clock`] that all
//! expiry decisions read, and the [`audit`] event every security-relevant
//! action produces. Nothing here performs I/O or knows about HTTP.

pub mod audit;
mod clock;

pub use clock::{Clock, ManualClock, SystemClock};
