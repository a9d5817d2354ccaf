//! The job that sends queued mail (`mail.rs`) every [`MAIL_POLL`].

use std::sync::Arc;
use std::time::Duration;

use echo_edge::Periodic;

use crate::{Provider, Result};

/// How often the outbox is looked at.
pub const MAIL_POLL: Duration = Duration::from_secs(1);

impl Provider {
    /// Sends every queued message that is due; how many went out (none
    /// without an SMTP server).
    pub async fn deliver_mail(&self) -> Result<usize> {
        match &self.outbox {
            Some(outbox) => outbox.deliver(&self.mail_key).await,
            None => Ok(0),
        }
    }
}

/// Delivers queued mail every [`MAIL_POLL`].
pub(crate) fn job(provider: Arc<Provider>) -> Periodic {
    Periodic::every("mail", MAIL_POLL, move || {
        let provider = provider.clone();
        async move { provider.deliver_mail().await.map(drop) }
    })
}
