//! The user lifecycle as a finite state machine.
//!
//! | from \ to   | invited | active | suspended | deleted |
//! |-------------|---------|--------|-----------|---------|
//! | invited     |         | yes    |           | yes     |
//! | active      |         |        | yes       | yes     |
//! | suspended   |         | yes    |           | yes     |
//! | deleted     |         |        |           |         |
//!
//! Only `active` users can log in or renew tokens. Suspending or deleting
//! a user ends everything they hold: their SSO sessions, every refresh
//! token and the access tokens issued with them. `deleted` is final: the
//! row stays (audit events refer to it, and the name is never reused).
//! Every transition is audited (`admin.user.state_changed`).

use std::fmt;
use std::str::FromStr;

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_identity_store::Store;

use crate::{IdentityError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    /// Registered by an admin, not yet allowed to log in.
    Invited,
    Active,
    /// Temporarily barred: cannot log in, tokens revoked.
    Suspended,
    /// Final.
    Deleted,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Invited => "invited",
            UserState::Active => "active",
            UserState::Suspended => "suspended",
            UserState::Deleted => "deleted",
        }
    }

    /// The states this one may move to.
    pub fn successors(self) -> &'static [UserState] {
        match self {
            UserState::Invited => &[UserState::Active, UserState::Deleted],
            UserState::Active => &[UserState::Suspended, UserState::Deleted],
            UserState::Suspended => &[UserState::Active, UserState::Deleted],
            UserState::Deleted => &[],
        }
    }

    /// `Ok` if the machine allows `self → to`, else a clear error.
    pub fn check_transition(self, to: UserState) -> Result<()> {
        if self.successors().contains(&to) {
            Ok(())
        } else {
            let allowed: Vec<&str> = self.successors().iter().map(|s| s.as_str()).collect();
            Err(IdentityError::InvalidTransition {
                from: self.as_str(),
                to: to.as_str(),
                allowed: if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                },
            })
        }
    }

    /// Whether entering this state ends the user's sessions and tokens.
    fn ends_sessions(self) -> bool {
        matches!(self, UserState::Suspended | UserState::Deleted)
    }
}

impl fmt::Display for UserState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserState {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self> {
        [
            UserState::Invited,
            UserState::Active,
            UserState::Suspended,
            UserState::Deleted,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| {
            IdentityError::Store(echo_identity_store::StoreError::Corrupt(format!(
                "user state {s:?}"
            )))
        })
    }
}

/// The user named `username`, or a clear error.
pub async fn find_user(store: &dyn Store, username: &str) -> Result<echo_identity_store::User> {
    store
        .user_by_username(username)
        .await?
        .ok_or_else(|| IdentityError::NotFound(format!("user named {username:?}")))
}

/// The state of a stored user.
pub(crate) fn state_of(user: &echo_identity_store::User) -> Result<UserState> {
    user.state.parse()
}

/// `echod user activate|suspend|delete NAME`: moves the user to `to` if
/// the machine allows it from the state they are in, audited.
pub async fn change_state(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    username: &str,
    to: UserState,
) -> Result<UserState> {
    let user = find_user(store, username).await?;
    let from = state_of(&user)?;
    from.check_transition(to)?;
    if to == UserState::Active && user.password_hash.is_empty() {
        return Err(IdentityError::BadInput(format!(
            "user {username} has no password yet: give one with --password-stdin"
        )));
    }
    if !store
        .set_user_state(
            &user.id,
            from.as_str(),
            to.as_str(),
            to.ends_sessions(),
            clock.now(),
        )
        .await?
    {
        return Err(IdentityError::BadInput(format!(
            "user {username} changed state meanwhile; try again"
        )));
    }
    audit.record(
        AuditEvent::success("admin.user.state_changed")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", username)
            .detail("from", from.as_str())
            .detail("to", to.as_str()),
    );
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [UserState; 4] = [
        UserState::Invited,
        UserState::Active,
        UserState::Suspended,
        UserState::Deleted,
    ];

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use UserState::*;
        let allowed = [
            (Invited, Active),
            (Invited, Deleted),
            (Active, Suspended),
            (Active, Deleted),
            (Suspended, Active),
            (Suspended, Deleted),
        ];
        for from in ALL {
            for to in ALL {
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn a_refused_transition_names_both_states() {
        let error = UserState::Deleted
            .check_transition(UserState::Active)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot move a user from deleted to active (allowed from deleted: none)"
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in ALL {
            assert_eq!(state.as_str().parse::<UserState>().unwrap(), state);
        }
        assert!("banned".parse::<UserState>().is_err());
    }
}
