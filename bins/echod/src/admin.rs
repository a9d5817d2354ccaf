//! `echod user …` and `echod client …`: they work on the same database as
//! a running server, so they can be used while it runs (a server sees a
//! changed client within its 2 s registration cache, and at once when a
//! client's authentication would otherwise fail).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use echo_core::SystemClock;
use echo_core::audit::LogAuditSink;
use echo_crypto::TrustedRoots;
use echo_edge::Origin;
use echo_identity::admin::{self, ClientSecret, NewClient, NewUser, Registration};
use echo_identity::grant;
use echo_identity::user_state::{UserState, change_state, find_user};
use echo_identity::{IdentityConfig, Provider, RegistrationPolicy, lockout, mfa};

use crate::identity::SmtpArgs;
use crate::settings::{master_key, open_store};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input.
    #[command(after_help = USER_ADD_EXAMPLES)]
    Add {
        /// The user's login name.
        name: String,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// The user's e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// A role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users.
    List {
        /// Only users whose username or email contains this text (any case).
        #[arg(long)]
        search: Option<String>,
    },
    /// Register a user who cannot log in until activated; with mail set up
    /// (and registration `invite` or `open`), mail them a link to choose a
    /// password.
    Invite {
        /// The user's login name.
        name: String,
        /// The user's e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// A role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        mail: InviteMailArgs,
    },
    /// Make an invited or suspended user active.
    Activate {
        /// The user's login name.
        name: String,
        /// Read a new password from standard input (an invited user needs one).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Suspend an active user: no login, sessions and refresh tokens revoked.
    Suspend {
        /// The user's login name.
        name: String,
    },
    /// Delete a user for good (the record stays, unusable).
    Delete {
        /// The user's login name.
        name: String,
    },
    /// Show a user's state, roles, second factor and lockout.
    Show {
        /// The user's login name.
        name: String,
    },
    /// Replace a user's roles (none clears them).
    SetRoles {
        /// The user's login name.
        name: String,
        /// The roles the user has from now on.
        roles: Vec<String>,
    },
    /// Lift a lockout: forget the user's failed attempts.
    Unlock {
        /// The user's login name.
        name: String,
    },
    /// Remove a user's TOTP and recovery codes (a lost authenticator).
    ResetMfa {
        /// The user's login name.
        name: String,
    },
}

/// What a local `user invite` needs to mail the invitation as identity
/// would: identity's own settings (the configuration's `[identity]` keys
/// set them for both). The mail goes into identity's outbox in the data
/// directory; the identity running on it sends it.
#[derive(Debug, Args)]
pub struct InviteMailArgs {
    /// Identity's public issuer URL, which the invitation's link points at
    /// (required when mail is set up).
    #[arg(long, env = "ECHO_ISSUER")]
    issuer: Option<String>,
    #[command(flatten)]
    smtp: SmtpArgs,
    /// Identity's registration policy: invitations are mailed under
    /// `invite` and `open`.
    #[arg(long, env = "ECHO_REGISTRATION", default_value = "closed", value_parser = crate::account_policy::parse_registration)]
    registration: RegistrationPolicy,
}

impl InviteMailArgs {
    /// A provider that can mail invitations, when mail is set up.
    async fn mailer(
        &self,
        dir: &Path,
        roots: &TrustedRoots,
        store: &Arc<dyn echo_identity_store::Store>,
    ) -> anyhow::Result<Option<Provider>> {
        let Some(outbox) = self.smtp.outbox(dir, roots).await? else {
            return Ok(None);
        };
        let issuer = self
            .issuer
            .as_deref()
            .context("mail is set up (ECHO_SMTP_URL): set ECHO_ISSUER (or --issuer) too, the address the invitation's link points at")?;
        let mut config = IdentityConfig::new(issuer);
        config.registration = self.registration;
        // The provider only mails; RS256 (which ID tokens always use) keeps
        // it from creating a signing key of another algorithm than the
        // server's.
        config.access_token_alg = echo_crypto::Algorithm::RS256;
        let provider = Provider::new(
            config,
            store.clone(),
            &master_key(dir)?,
            Arc::new(LogAuditSink),
            Arc::new(SystemClock),
        )
        .await?;
        Ok(Some(provider.with_outbox(outbox)))
    }
}

const USER_ADD_EXAMPLES: &str = "\
Examples:
  echo \"$PASSWORD\" | echod user add alice --password-stdin --email alice@example.test --role auditor";

const CLIENT_ADD_EXAMPLES: &str = "\
Examples:
  # a service that gets tokens for the audit service
  echo \"$SECRET\" | echod client add svc-a --secret-stdin --grant client_credentials --audience audit
  # a web app that signs users in (authorization code + PKCE)
  echod client add web --generate-secret --redirect-uri https://app.example/callback \\
    --post-logout-redirect-uri https://app.example/ --audience gateway";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Grant {
    /// Users sign in through the browser (needs --redirect-uri).
    #[value(name = "authorization_code")]
    AuthorizationCode,
    /// Refresh tokens (with scope offline_access).
    #[value(name = "refresh_token")]
    RefreshToken,
    /// The client's own tokens, for service-to-service calls.
    #[value(name = "client_credentials")]
    ClientCredentials,
    /// RFC 8693 token exchange.
    #[value(name = "token_exchange")]
    TokenExchange,
}

impl Grant {
    /// The grant's name in a registration.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => grant::GRANT_AUTHORIZATION_CODE,
            Grant::RefreshToken => grant::GRANT_REFRESH_TOKEN,
            Grant::ClientCredentials => grant::GRANT_CLIENT_CREDENTIALS,
            Grant::TokenExchange => grant::GRANT_TOKEN_EXCHANGE,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client.
    #[command(after_help = CLIENT_ADD_EXAMPLES)]
    Add(ClientAddArgs),
    /// List clients.
    List,
    /// Change a client's redirect URIs, post-logout URIs, grants,
    /// audiences or scopes; what no flag names stays.
    #[command(after_help = CLIENT_UPDATE_EXAMPLES)]
    Update(ClientUpdateArgs),
    /// Delete a client, revoking its refresh tokens and the access tokens
    /// issued with them.
    Delete {
        /// The client's id.
        id: String,
    },
    /// Give a client a new generated secret (printed once); the old one
    /// keeps working during the overlap.
    RotateSecret {
        /// The client's id.
        id: String,
        /// How long the old secret keeps working, e.g. `24h`, `30m`, `0s`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
    },
}

const CLIENT_UPDATE_EXAMPLES: &str = "\
Examples:
  echod client update web --add-redirect-uri https://app.example/cb2 \\
    --remove-redirect-uri https://old.example/cb
  echod client update svc-a --add-audience docs --add-scope docs.read --remove-grant token_exchange";

/// `echod client update`: each list changes by what is added and removed.
#[derive(Debug, Args)]
pub struct ClientUpdateArgs {
    /// The client's id.
    pub id: String,
    /// Add a redirect URI (repeatable).
    #[arg(long = "add-redirect-uri", value_name = "URI")]
    add_redirect_uris: Vec<String>,
    /// Remove a redirect URI (repeatable).
    #[arg(long = "remove-redirect-uri", value_name = "URI")]
    remove_redirect_uris: Vec<String>,
    /// Add a post-logout redirect URI (repeatable).
    #[arg(long = "add-post-logout-redirect-uri", value_name = "URI")]
    add_post_logout_redirect_uris: Vec<String>,
    /// Remove a post-logout redirect URI (repeatable).
    #[arg(long = "remove-post-logout-redirect-uri", value_name = "URI")]
    remove_post_logout_redirect_uris: Vec<String>,
    /// Add a grant (repeatable).
    #[arg(long = "add-grant", value_enum)]
    add_grants: Vec<Grant>,
    /// Remove a grant (repeatable).
    #[arg(long = "remove-grant", value_enum)]
    remove_grants: Vec<Grant>,
    /// Add an audience the client may ask tokens for (repeatable).
    #[arg(long = "add-audience")]
    add_audiences: Vec<String>,
    /// Remove an audience (repeatable).
    #[arg(long = "remove-audience")]
    remove_audiences: Vec<String>,
    /// Add a scope the client may ask for (repeatable).
    #[arg(long = "add-scope")]
    add_scopes: Vec<String>,
    /// Remove a scope (repeatable).
    #[arg(long = "remove-scope")]
    remove_scopes: Vec<String>,
    /// Whether this confidential client may skip PKCE (legacy apps only).
    #[arg(long, value_name = "BOOL")]
    allow_no_pkce: Option<bool>,
}

impl ClientUpdateArgs {
    /// `current` with this command's changes applied.
    pub fn apply(&self, current: Registration) -> Registration {
        fn edit(mut list: Vec<String>, add: &[String], remove: &[String]) -> Vec<String> {
            list.retain(|item| !remove.contains(item));
            for item in add {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            list
        }
        let names = |grants: &[Grant]| -> Vec<String> {
            grants.iter().map(|g| g.as_str().to_owned()).collect()
        };
        Registration {
            redirect_uris: edit(
                current.redirect_uris,
                &self.add_redirect_uris,
                &self.remove_redirect_uris,
            ),
            post_logout_redirect_uris: edit(
                current.post_logout_redirect_uris,
                &self.add_post_logout_redirect_uris,
                &self.remove_post_logout_redirect_uris,
            ),
            grants: edit(
                current.grants,
                &names(&self.add_grants),
                &names(&self.remove_grants),
            ),
            audiences: edit(
                current.audiences,
                &self.add_audiences,
                &self.remove_audiences,
            ),
            scopes: edit(current.scopes, &self.add_scopes, &self.remove_scopes),
            allow_no_pkce: self.allow_no_pkce.unwrap_or(current.allow_no_pkce),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["secret_stdin", "generate_secret", "public", "jwks_file"])))]
pub struct ClientAddArgs {
    /// The client's id (its `client_id`).
    pub id: String,
    /// Read the client secret from standard input (at least 32 characters).
    #[arg(long)]
    pub secret_stdin: bool,
    /// Generate a 256-bit secret and print it once.
    #[arg(long)]
    pub(crate) generate_secret: bool,
    /// A public client (no secret; PKCE required).
    #[arg(long)]
    pub(crate) public: bool,
    /// Authenticate with private_key_jwt (RFC 7523) instead of a secret:
    /// the client's public key(s), a JWK Set or one JWK, in this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) jwks_file: Option<PathBuf>,
    /// Where identity may send a user back with a code, compared exactly
    /// (repeatable).
    #[arg(long = "redirect-uri")]
    pub(crate) redirect_uris: Vec<String>,
    /// A grant the client may use (repeatable; default: authorization_code
    /// with a --redirect-uri, else client_credentials).
    #[arg(long = "grant", value_enum)]
    pub(crate) grants: Vec<Grant>,
    /// An audience the client may ask tokens for (repeatable).
    #[arg(long = "audience")]
    pub(crate) audiences: Vec<String>,
    /// A scope the client may ask for (repeatable).
    #[arg(long = "scope")]
    pub(crate) scopes: Vec<String>,
    /// Where identity may send a user back after logout (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    pub(crate) post_logout_redirect_uris: Vec<String>,
    /// Let this confidential client skip PKCE (legacy apps only).
    #[arg(long)]
    pub(crate) allow_no_pkce: bool,
}

/// One line of standard input, without its line ending.
pub(crate) fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = text.lines().next().unwrap_or("").to_owned();
    anyhow::ensure!(!line.is_empty(), "no {what} on standard input");
    Ok(line)
}

async fn user_add(
    store: &dyn echo_identity_store::Store,
    name: String,
    email: Option<String>,
    roles: Vec<String>,
) -> anyhow::Result<()> {
    let password = read_stdin_line("password")?;
    let user = admin::add_user(
        store,
        &LogAuditSink,
        &SystemClock,
        NewUser {
            username: name,
            password,
            email,
            roles,
        },
    )
    .await?;
    println!("added user {} (id {})", user.username, user.id);
    Ok(())
}

/// `echod user …`.
pub async fn user_command(
    dir: &Path,
    roots: &TrustedRoots,
    command: UserCommand,
) -> anyhow::Result<()> {
    let shared = open_store(dir, roots).await?;
    let (store, audit, clock) = (&*shared, &LogAuditSink, &SystemClock);
    match command {
        UserCommand::Add {
            name, email, roles, ..
        } => user_add(store, name, email, roles).await?,
        UserCommand::List { search } => user_list(store, search.as_deref()).await?,
        UserCommand::Invite {
            name,
            email,
            roles,
            mail,
        } => {
            // Checked first: a missing issuer leaves no half-done invitation.
            let mailer = mail.mailer(dir, roots, &shared).await?;
            let user = admin::invite_user(store, audit, clock, name, email, roles).await?;
            println!("invited user {} (id {})", user.username, user.id);
            if let Some(provider) = mailer {
                if provider
                    .send_invitation(&user, "cli", &Origin::unknown())
                    .await?
                {
                    println!(
                        "invitation queued for {} (sent by identity)",
                        user.email.as_deref().unwrap_or("-")
                    );
                } else {
                    println!("invitation not mailed (registration is closed, or no --email)");
                }
            }
        }
        UserCommand::Activate {
            name,
            password_stdin,
        } => {
            let password = password_stdin
                .then(|| read_stdin_line("password"))
                .transpose()?;
            let from = admin::activate_user(store, audit, clock, &name, password).await?;
            println!("user {name}: {from} → active");
        }
        UserCommand::Suspend { name } => {
            let from = change_state(store, audit, clock, &name, UserState::Suspended).await?;
            println!("user {name}: {from} → suspended (sessions and refresh tokens revoked)");
        }
        UserCommand::Delete { name } => {
            let from = change_state(store, audit, clock, &name, UserState::Deleted).await?;
            println!("user {name}: {from} → deleted (sessions and refresh tokens revoked)");
        }
        UserCommand::Show { name } => {
            let user = find_user(store, &name).await?;
            let policy = IdentityConfig::new("").lockout;
            print_user(&ShownUser {
                username: &user.username,
                id: &user.id,
                email: user.email.as_deref().unwrap_or("-"),
                state: &user.state,
                roles: &user.roles,
                mfa: mfa::mfa_state(store, &user.id).await?,
                lockout: lockout::lockout_status(store, &policy, clock, &user.id).await?,
            });
        }
        UserCommand::SetRoles { name, roles } => {
            let roles = admin::set_roles(store, audit, &name, roles).await?;
            println!("user {name}: roles {}", list_or_dash(&roles));
        }
        UserCommand::Unlock { name } => {
            lockout::unlock_user(store, audit, &name).await?;
            println!("user {name}: unlocked");
        }
        UserCommand::ResetMfa { name } => {
            if mfa::reset_mfa(store, audit, &name).await? {
                println!("user {name}: TOTP and recovery codes removed");
            } else {
                println!("user {name}: had no second factor");
            }
        }
    }
    Ok(())
}

/// What `user show` prints, locally or through the API.
pub(crate) struct ShownUser<'a> {
    pub username: &'a str,
    pub id: &'a str,
    pub email: &'a str,
    pub state: &'a str,
    pub roles: &'a [String],
    pub mfa: mfa::MfaState,
    pub lockout: lockout::LockoutStatus,
}

pub(crate) fn print_user(user: &ShownUser) {
    println!("username  {}", user.username);
    println!("id        {}", user.id);
    println!("email     {}", user.email);
    println!("state     {}", user.state);
    println!("roles     {}", list_or_dash(user.roles));
    println!("mfa       {}", user.mfa);
    println!("lockout   {}", user.lockout);
}

pub(crate) fn list_or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(",")
    }
}

async fn user_list(
    store: &dyn echo_identity_store::Store,
    search: Option<&str>,
) -> anyhow::Result<()> {
    println!("{:<24} {:<24} {:<32} ROLES", "USERNAME", "ID", "EMAIL");
    let mut cursor = None;
    loop {
        let page =
            admin::list_users(store, search, cursor.as_deref(), admin::MAX_PAGE_SIZE).await?;
        for user in page.items {
            println!(
                "{:<24} {:<24} {:<32} {}",
                user.username,
                user.id,
                user.email.as_deref().unwrap_or("-"),
                user.roles.join(",")
            );
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

pub async fn client_add(
    dir: &Path,
    roots: &TrustedRoots,
    args: ClientAddArgs,
) -> anyhow::Result<()> {
    let secret = if args.public {
        ClientSecret::Public
    } else if let Some(path) = &args.jwks_file {
        ClientSecret::PrivateKeyJwt(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
    } else if args.generate_secret {
        ClientSecret::Generate
    } else {
        ClientSecret::Provided(read_stdin_line("client secret")?)
    };
    let grants = args.grants.iter().map(|g| g.as_str().to_owned()).collect();
    let new = NewClient {
        id: args.id.clone(),
        secret,
        redirect_uris: args.redirect_uris,
        grants,
        audiences: args.audiences,
        scopes: args.scopes,
        post_logout_redirect_uris: args.post_logout_redirect_uris,
        allow_no_pkce: args.allow_no_pkce,
    };
    let store = open_store(dir, roots).await?;
    let generated = admin::add_client(&*store, &LogAuditSink, &SystemClock, new).await?;
    println!("added client {}", args.id);
    if let Some(secret) = generated {
        println!("client secret (shown once, store it now): {secret}");
    }
    Ok(())
}

pub async fn client_list(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<()> {
    let store = open_store(dir, roots).await?;
    println!(
        "{:<24} {:<15} {:<40} {:<24} REDIRECT URIS",
        "ID", "TYPE", "GRANTS", "AUDIENCES"
    );
    for client in store.list_clients().await? {
        println!(
            "{:<24} {:<15} {:<40} {:<24} {}",
            client.id,
            if client.jwks.is_some() {
                "private_key_jwt"
            } else if client.is_public() {
                "public"
            } else {
                "confidential"
            },
            client.grant_types.join(","),
            if client.audiences.is_empty() {
                "-".to_owned()
            } else {
                client.audiences.join(",")
            },
            client.redirect_uris.join(" ")
        );
    }
    Ok(())
}

pub async fn client_update(
    dir: &Path,
    roots: &TrustedRoots,
    args: ClientUpdateArgs,
) -> anyhow::Result<()> {
    let store = open_store(dir, roots).await?;
    let current = admin::find_client(&*store, &args.id).await?;
    let wanted = args.apply(Registration::of(&current));
    let client = admin::update_client(&*store, &LogAuditSink, &args.id, wanted).await?;
    print_registration(&client.id, &Registration::of(&client));
    Ok(())
}

/// What `client update` prints: the registration as it now is.
pub(crate) fn print_registration(id: &str, r: &Registration) {
    println!("updated client {id}");
    println!(
        "redirect uris              {}",
        list_or_dash(&r.redirect_uris)
    );
    println!(
        "post-logout redirect uris  {}",
        list_or_dash(&r.post_logout_redirect_uris)
    );
    println!("grants                     {}", list_or_dash(&r.grants));
    println!("audiences                  {}", list_or_dash(&r.audiences));
    println!("scopes                     {}", list_or_dash(&r.scopes));
    println!("allow no pkce              {}", r.allow_no_pkce);
}

pub async fn client_delete(dir: &Path, roots: &TrustedRoots, id: &str) -> anyhow::Result<()> {
    let store = open_store(dir, roots).await?;
    admin::delete_client(&*store, &LogAuditSink, &SystemClock, id).await?;
    println!("deleted client {id} (its refresh tokens and their access tokens revoked)");
    Ok(())
}

pub async fn client_rotate_secret(
    dir: &Path,
    roots: &TrustedRoots,
    id: &str,
    overlap: std::time::Duration,
) -> anyhow::Result<()> {
    let seconds = i64::try_from(overlap.as_secs()).context("the overlap is too long")?;
    let store = open_store(dir, roots).await?;
    let secret =
        admin::rotate_client_secret(&*store, &LogAuditSink, &SystemClock, id, seconds).await?;
    println!("rotated the secret of client {id}");
    println!("new client secret (shown once, store it now): {secret}");
    println!(
        "the old secret keeps working for {}",
        humantime::format_duration(overlap)
    );
    Ok(())
}
