//! Guessing protection per account: a progressive delay, then a temporary
//! lockout (NIST SP 800-63B §5.2.2, "rate limiting"; OWASP ASVS V2.2.1).
//!
//! Every guess at a user's secrets (a password, a TOTP code, a recovery
//! code) first *reserves* an attempt: the user's failure counter is
//! advanced with a compare-and-swap in the database before the secret is
//! checked, and only a successful login resets it. So however many guesses
//! arrive at once, from however many addresses, at most
//! [`crate::config::LockoutPolicy::lock_after`] of them are ever checked before the
//! account locks: the concurrent bypass of a read-then-write counter (a
//! real ZITADEL advisory) cannot happen. A refused guess still costs
//! the caller an argon2 verification against a dummy hash (see `login.rs`),
//! so neither the answer nor its timing tells a locked account from a wrong
//! password or a missing user.

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_identity_store::{LoginCounter, Store};

use crate::config::LockoutPolicy;
use crate::{Provider, Result};
use echo_edge::Origin;

/// Compare-and-swap rounds before a reservation gives up and refuses (fail
/// closed); each lost round means another guess was counted meanwhile.
const MAX_SWAPS: usize = 256;
/// How long a delayed or locked guess waits for the guesses in flight before
/// it to settle (see [`Provider::reserve_attempt`]), and how often it looks.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The outcome of reserving a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// The guess may be checked; the counter already counts it as failed.
    Granted(LoginCounter),
    /// Delayed or locked: the guess must not be checked.
    Refused,
}

impl Provider {
    /// Reserves one guess at `user_id`'s secrets, before checking it.
    ///
    /// A reservation counts as a failure until the guess is settled, so
    /// legitimate logins arriving together (a user's tabs, a retrying
    /// client) can find the delay or the lock reached by guesses still in
    /// flight that are about to succeed. A refused reservation therefore
    /// waits up to [`SETTLE_WAIT`], re-reading the counter, before it is
    /// refused: a success clears the counter, and a short delay expires.
    /// Never more than `lock_after` guesses are checked either way.
    pub(crate) async fn reserve_attempt(&self, user_id: &str) -> Result<Reservation> {
        let policy = self.config.lockout;
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        let mut swaps = 0;
        loop {
            let Some(counter) = self.store.login_counter(user_id).await? else {
                return Ok(Reservation::Refused);
            };
            match policy.reserve(counter, self.clock.now()) {
                Ok(reserved) => {
                    if self
                        .store
                        .swap_login_counter(user_id, counter, reserved)
                        .await?
                    {
                        return Ok(Reservation::Granted(reserved));
                    }
                    swaps += 1;
                    if swaps >= MAX_SWAPS {
                        return Ok(Reservation::Refused);
                    }
                }
                Err(_) if tokio::time::Instant::now() + SETTLE_POLL > deadline => {
                    return Ok(Reservation::Refused);
                }
                Err(_) => tokio::time::sleep(SETTLE_POLL).await,
            }
        }
    }

    /// A reserved guess turned out wrong: audits the lock it caused, if any.
    pub(crate) fn attempt_failed(&self, user_id: &str, reserved: LoginCounter, meta: &Origin) {
        if reserved.failures == self.config.lockout.lock_after {
            crate::metrics::lockout();
            self.audit(
                AuditEvent::failure("auth.account.locked")
                    .actor(user_id)
                    .detail("failures", reserved.failures)
                    .detail("until", self.config.lockout.next_attempt_at(reserved)),
                meta,
            );
        }
    }

    /// A login completed: the user's failures are forgotten.
    pub(crate) async fn clear_failures(&self, user_id: &str) -> Result<()> {
        clear_failures(&*self.store, user_id).await
    }
}

/// Resets `user_id`'s failure counter (whatever concurrent guesses add).
async fn clear_failures(store: &dyn Store, user_id: &str) -> Result<()> {
    for _ in 0..MAX_SWAPS {
        match store.login_counter(user_id).await? {
            Some(counter) if counter != LoginCounter::default() => {
                if store
                    .swap_login_counter(user_id, counter, LoginCounter::default())
                    .await?
                {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// `echod user unlock NAME`: forgets the user's failures, lifting a lock.
pub async fn unlock_user(store: &dyn Store, audit: &dyn AuditSink, username: &str) -> Result<()> {
    let user = crate::user_state::find_user(store, username).await?;
    clear_failures(store, &user.id).await?;
    audit.record(
        AuditEvent::success("admin.user.unlocked")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", username),
    );
    Ok(())
}

/// A user's lockout as `echod user show` and the admin API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutStatus {
    /// Recent consecutive failures (forgotten after a quiet lock duration).
    pub failures: i64,
    /// Seconds the account stays locked, if it is.
    pub locked_for: Option<i64>,
}

impl std::fmt::Display for LockoutStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.locked_for, self.failures) {
            (Some(seconds), _) => write!(f, "locked for {seconds} s more"),
            (None, 0) => f.write_str("none"),
            (None, failures) => write!(f, "{failures} recent failed attempts"),
        }
    }
}

/// User `user_id`'s lockout under `policy` at `clock`'s now.
pub async fn lockout_status(
    store: &dyn Store,
    policy: &LockoutPolicy,
    clock: &dyn Clock,
    user_id: &str,
) -> Result<LockoutStatus> {
    let now = clock.now();
    let counter = policy.current(store.login_counter(user_id).await?.unwrap_or_default(), now);
    Ok(LockoutStatus {
        failures: counter.failures,
        locked_for: policy.locked_until(counter, now).map(|until| until - now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(failures: i64, last_failed_at: i64) -> LoginCounter {
        LoginCounter {
            failures,
            last_failed_at,
        }
    }

    #[test]
    fn five_free_guesses_then_doubling_delays_then_a_lock() {
        let policy = LockoutPolicy::default();
        let mut now = 1_000;
        let mut c = LoginCounter::default();
        for expected in 1..=5 {
            c = policy.reserve(c, now).unwrap();
            assert_eq!(c.failures, expected);
        }
        for delay in [1, 2, 4, 8, 16] {
            assert_eq!(policy.reserve(c, now + delay - 1), Err(now + delay));
            now += delay;
            c = policy.reserve(c, now).unwrap();
        }
        assert_eq!(c.failures, 10);
        assert_eq!(policy.locked_until(c, now), Some(now + 900));
        assert_eq!(policy.reserve(c, now + 899), Err(now + 900));
        // the lock ends and the failures are forgotten with it
        assert_eq!(policy.locked_until(c, now + 900), None);
        assert_eq!(policy.reserve(c, now + 900), Ok(counter(1, now + 900)));
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_lock_duration() {
        let policy = LockoutPolicy::default();
        let c = counter(4, 100);
        assert_eq!(policy.current(c, 999), c);
        assert_eq!(policy.current(c, 1_000), LoginCounter::default());
    }

    #[test]
    fn long_delays_saturate_instead_of_overflowing() {
        let policy = LockoutPolicy {
            lock_after: i64::MAX,
            ..LockoutPolicy::default()
        };
        assert!(policy.next_attempt_at(counter(200, 0)) > 0);
    }
}
