//! Flags for identity's account and token policy: refresh-token lifetimes,
//! the lockout, which roles need a second factor, and who may open an
//! account.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_identity::{IdentityConfig, RegistrationPolicy};

#[derive(Debug, Clone, Args)]
pub struct AccountPolicyArgs {
    /// A refresh token unused this long expires (e.g. `30d`).
    #[arg(long, env = "ECHO_REFRESH_IDLE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_idle: Duration,
    /// No refresh token outlives its first login by more than this.
    #[arg(long, env = "ECHO_REFRESH_MAX", default_value = "90d", value_parser = humantime::parse_duration)]
    pub refresh_max: Duration,
    /// Within this long of a rotation (e.g. `2s`, `500ms`; at most 60s), the
    /// same client, authenticating the same way, may present the spent
    /// refresh token again and get the same successor (parallel tabs,
    /// retries) instead of revoking its family. Off by default: any reuse
    /// revokes the family (RFC 9700).
    #[arg(long, env = "ECHO_REFRESH_GRACE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub refresh_grace: Duration,
    /// Consecutive failed logins that lock an account.
    #[arg(long, env = "ECHO_LOCKOUT_AFTER", default_value_t = 10)]
    pub lockout_after: i64,
    /// How long a lockout lasts.
    #[arg(long, env = "ECHO_LOCKOUT_DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub lockout_duration: Duration,
    /// Roles that must use a second factor, comma-separated (empty: none).
    #[arg(
        long,
        env = "ECHO_MFA_REQUIRED_ROLES",
        default_value = "admin",
        value_delimiter = ','
    )]
    pub mfa_required_roles: Vec<String>,
    /// Scopes only services get (client credentials), comma-separated: a
    /// login asking for one is refused.
    #[arg(
        long,
        env = "ECHO_SERVICE_SCOPES",
        default_value = "audit.read,audit.write,docs.index,metrics.read",
        value_delimiter = ','
    )]
    pub service_scopes: Vec<String>,
    /// Who may open an account: `closed` (administrators only), `invite`
    /// (administrators invite by mail; the invitee chooses a password) or
    /// `open` (anyone at /register, active once the address is verified;
    /// needs --smtp-url).
    #[arg(long, env = "ECHO_REGISTRATION", default_value = "closed", value_parser = parse_registration)]
    pub registration: RegistrationPolicy,
    /// Domains whose addresses may sign up at /register, comma-separated
    /// (empty: any).
    #[arg(
        long,
        env = "ECHO_REGISTRATION_DOMAINS",
        default_value = "",
        value_delimiter = ','
    )]
    pub registration_domains: Vec<String>,
}

pub(crate) fn parse_registration(value: &str) -> Result<RegistrationPolicy, String> {
    value
        .parse()
        .map_err(|e: echo_identity::IdentityError| e.to_string())
}

fn seconds(d: Duration, what: &str) -> anyhow::Result<i64> {
    i64::try_from(d.as_secs()).with_context(|| format!("{what} is too long"))
}

impl AccountPolicyArgs {
    /// Sets the policy on `config`, refusing combinations that make no sense.
    pub fn apply(&self, config: &mut IdentityConfig) -> anyhow::Result<()> {
        config.refresh_token_idle_ttl = seconds(self.refresh_idle, "--refresh-idle")?;
        config.refresh_token_absolute_ttl = seconds(self.refresh_max, "--refresh-max")?;
        config.refresh_token_grace = self.refresh_grace;
        if config.refresh_token_idle_ttl == 0
            || config.refresh_token_idle_ttl > config.refresh_token_absolute_ttl
        {
            anyhow::bail!("--refresh-idle must be above zero and at most --refresh-max");
        }
        if config.refresh_token_grace > echo_identity::MAX_REFRESH_GRACE {
            anyhow::bail!(
                "--refresh-grace is at most 60s: a longer grace lets a stolen token ride along"
            );
        }
        let lockout = &mut config.lockout;
        if self.lockout_after <= lockout.free_failures {
            anyhow::bail!(
                "--lockout-after must be above the {} failures allowed without delay",
                lockout.free_failures
            );
        }
        lockout.lock_after = self.lockout_after;
        lockout.lock_duration = seconds(self.lockout_duration, "--lockout-duration")?;
        config.mfa_required_roles = self
            .mfa_required_roles
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        config.service_scopes = self
            .service_scopes
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        config.registration = self.registration;
        config.registration_domains = self
            .registration_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: AccountPolicyArgs,
    }

    fn applied(args: &[&str]) -> anyhow::Result<IdentityConfig> {
        let cli = Cli::try_parse_from(std::iter::once("echod").chain(args.iter().copied()))?;
        let mut config = IdentityConfig::new("http://127.0.0.1:8081");
        cli.policy.apply(&mut config)?;
        Ok(config)
    }

    #[test]
    fn defaults_keep_the_documented_policy() {
        let config = applied(&[]).unwrap();
        let default = IdentityConfig::new("http://127.0.0.1:8081");
        assert_eq!(
            config.refresh_token_idle_ttl,
            default.refresh_token_idle_ttl
        );
        assert_eq!(
            config.refresh_token_absolute_ttl,
            default.refresh_token_absolute_ttl
        );
        assert_eq!(config.refresh_token_grace, default.refresh_token_grace);
        assert_eq!(
            config.refresh_token_grace,
            Duration::ZERO,
            "strict by default"
        );
        assert_eq!(config.lockout.lock_after, default.lockout.lock_after);
        assert_eq!(config.lockout.lock_duration, default.lockout.lock_duration);
        assert_eq!(config.mfa_required_roles, ["admin"]);
    }

    #[test]
    fn flags_set_the_policy() {
        let config = applied(&[
            "--refresh-idle",
            "1d",
            "--refresh-max",
            "7d",
            "--refresh-grace",
            "1500ms",
            "--lockout-after",
            "6",
            "--lockout-duration",
            "1h",
            "--mfa-required-roles",
            "admin,auditor",
        ])
        .unwrap();
        assert_eq!(config.refresh_token_idle_ttl, 86_400);
        assert_eq!(config.refresh_token_absolute_ttl, 7 * 86_400);
        assert_eq!(config.refresh_token_grace, Duration::from_millis(1500));
        assert_eq!(
            (config.lockout.lock_after, config.lockout.lock_duration),
            (6, 3_600)
        );
        assert_eq!(config.mfa_required_roles, ["admin", "auditor"]);
        assert!(
            applied(&["--mfa-required-roles", ""])
                .unwrap()
                .mfa_required_roles
                .is_empty()
        );
    }

    #[test]
    fn nonsense_is_refused_clearly() {
        for (args, expected) in [
            (&["--refresh-idle", "100d"][..], "at most --refresh-max"),
            (&["--refresh-grace", "5m"][..], "at most 60s"),
            (&["--refresh-grace", "60001ms"][..], "at most 60s"),
            (&["--lockout-after", "3"][..], "above the 5 failures"),
            (&["--refresh-idle", "soon"][..], "invalid value"),
        ] {
            let error = applied(args).unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }
}
