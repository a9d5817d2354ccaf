use std::time::Duration;

use async_trait::async_trait;
use echo_crypto::JwkSet;
use echo_tls::ClientTls;

use crate::VerifyError;

/// Where a verifier gets the issuer's public keys.
#[async_trait]
pub trait JwksSource: Send + Sync + 'static {
    async fn fetch(&self) -> Result<JwkSet, VerifyError>;
}

/// Fetches the JWKS over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    url: String,
}

impl HttpJwks {
    /// Fetches from `url`, trusting what `tls` trusts.
    pub fn new(url: impl Into<String>, tls: &ClientTls) -> Self {
        let client = tls.http_client(Duration::from_secs(5));
        Self {
            client,
            url: url.into(),
        }
    }

    /// Reads `jwks_uri` from the issuer's discovery document.
    pub async fn discover(issuer: &str, tls: &ClientTls) -> Result<Self, VerifyError> {
        let this = Self::new(String::new(), tls);
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc: serde_json::Value = this.get_json(&url).await?;
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or_else(|| VerifyError::KeysUnavailable("discovery has no jwks_uri".into()))?;
        Ok(Self {
            url: jwks_uri.to_owned(),
            ..this
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, VerifyError> {
        let unavailable = |e: reqwest::Error| VerifyError::KeysUnavailable(e.to_string());
        self.client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        self.get_json(&self.url).await
    }
}

/// A fixed key set, given when the verifier is built: for keys distributed
/// out of band, and for tests that sign their own tokens.
#[derive(Debug, Clone)]
pub struct StaticJwks(pub JwkSet);

#[async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        Ok(self.0.clone())
    }
}
