//! Identity's metrics (docs/operations.md), recorded through the `metrics`
//! facade into the process's registry. Every label value is bounded: grant
//! names are identity's, client ids are registered clients' (tokens are
//! only issued to authenticated clients), outcomes are the fixed reasons
//! below.

use crate::grant::Grant;

/// A token issued by `grant` to the registered client `client_id`.
pub(crate) fn token_issued(grant: Grant, client_id: &str) {
    metrics::counter!(
        "echo_identity_tokens_issued_total",
        "grant" => grant.as_str(),
        "client" => client_id.to_owned()
    )
    .increment(1);
}

/// A password login's outcome: `success` (the login completed, after a
/// second factor if any), or why it failed (`unknown_user`,
/// `wrong_password`, `locked`, `rate_limited`, or the user's state).
pub(crate) fn login(outcome: &'static str) {
    metrics::counter!("echo_identity_logins_total", "outcome" => outcome).increment(1);
}

/// An account locked by too many failed guesses.
pub(crate) fn lockout() {
    metrics::counter!("echo_identity_lockouts_total").increment(1);
}

/// A second factor's outcome (`success`, `failure`, `locked`) by method
/// (`totp`, `recovery_code`; `none` when the account was locked first).
pub(crate) fn mfa(method: &'static str, outcome: &'static str) {
    metrics::counter!("echo_identity_mfa_total", "method" => method, "outcome" => outcome)
        .increment(1);
}

/// A spent refresh token presented again (its family revoked).
pub(crate) fn refresh_reuse() {
    metrics::counter!("echo_identity_refresh_reuse_detected_total").increment(1);
}
