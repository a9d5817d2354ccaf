//! Compact JWS (RFC 7515) signing and verification for JWTs.
//!
//! A [`SigningKey`] holds a parsed private key and signs without re-parsing;
//! a [`VerifyingKey`] holds a parsed public key. Each key has exactly one
//! [`Algorithm`]. Verification takes the algorithm from the key and only
//! checks that the token's header names the same one, so `alg: none`,
//! HMAC-with-a-public-key and any other algorithm confusion have nowhere to
//! go: there is no code path that lets a header pick the algorithm.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde::{Deserialize, Serialize};

use crate::jwk::Jwk;
use crate::secret::{b64url, b64url_decode};
use crate::{CryptoError, Result};

/// The JWS algorithms Echo signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key. OIDC requires it
    /// for ID tokens; slow to sign, fastest to verify.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == name)
            .ok_or_else(|| CryptoError::UnsupportedAlgorithm(name.to_owned()))
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum PrivateKey {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key with its `kid` and fixed algorithm.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: PrivateKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'a str,
}

impl SigningKey {
    /// A fresh key pair.
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Result<Self> {
        let rng = SystemRandom::new();
        let key = match alg {
            Algorithm::RS256 => PrivateKey::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| CryptoError::KeyGeneration)?,
            ),
            Algorithm::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| CryptoError::KeyGeneration)?;
                PrivateKey::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                        .map_err(|e| CryptoError::KeyRejected(e.to_string()))?,
                )
            }
            Algorithm::EdDSA => PrivateKey::Ed25519(
                Ed25519KeyPair::generate().map_err(|_| CryptoError::KeyGeneration)?,
            ),
        };
        Ok(Self {
            kid: kid.into(),
            alg,
            key,
            rng,
        })
    }

    /// Loads a key from its PKCS#8 DER form (as [`SigningKey::to_pkcs8`] wrote it).
    pub fn from_pkcs8(alg: Algorithm, kid: impl Into<String>, der: &[u8]) -> Result<Self> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| CryptoError::KeyRejected(e.to_string());
        let key = match alg {
            Algorithm::RS256 => PrivateKey::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?),
            Algorithm::ES256 => PrivateKey::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
            Algorithm::EdDSA => {
                PrivateKey::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?)
            }
        };
        Ok(Self {
            kid: kid.into(),
            alg,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The private key as PKCS#8 DER; callers seal it before storing.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>> {
        let der = match &self.key {
            PrivateKey::Rsa(k) => k.as_der().map(|d| d.as_ref().to_vec()),
            PrivateKey::Ecdsa(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            PrivateKey::Ed25519(k) => k.to_pkcs8().map(|d| d.as_ref().to_vec()),
        };
        der.map_err(|_| CryptoError::KeyGeneration)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            kty: String::new(),
            kid: Some(self.kid.clone()),
            alg: Some(self.alg.as_str().to_owned()),
            use_: Some("sig".to_owned()),
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
        };
        match &self.key {
            PrivateKey::Rsa(k) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                jwk.kty = "RSA".into();
                jwk.n = Some(b64url(&parts.n));
                jwk.e = Some(b64url(&parts.e));
            }
            PrivateKey::Ecdsa(k) => {
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = k.public_key().as_ref();
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = Some(b64url(&point[1..33]));
                jwk.y = Some(b64url(&point[33..65]));
            }
            PrivateKey::Ed25519(k) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = Some(b64url(k.public_key().as_ref()));
            }
        }
        jwk
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String> {
        let header = serde_json::to_vec(&Header {
            alg: self.alg.as_str(),
            kid: &self.kid,
            typ,
        })
        .map_err(|_| CryptoError::Signing)?;
        let payload = serde_json::to_vec(claims).map_err(|_| CryptoError::Signing)?;
        let mut token = b64url(&header);
        token.push('.');
        token.push_str(&b64url(&payload));
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            PrivateKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| CryptoError::Signing)?;
                Ok(sig)
            }
            PrivateKey::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::Signing),
            PrivateKey::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// A public key that verifies signatures of exactly one algorithm.
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a public JWK. The algorithm follows from the key type and
    /// curve; a JWK whose `alg` disagrees, or a symmetric (`oct`) key, is
    /// rejected.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self> {
        let field = |v: &Option<String>| {
            v.as_deref()
                .and_then(b64url_decode)
                .ok_or_else(|| CryptoError::KeyRejected("missing or malformed key member".into()))
        };
        let rejected = |e: aws_lc_rs::error::KeyRejected| CryptoError::KeyRejected(e.to_string());
        let (alg, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let parts = PublicKeyComponents {
                    n: field(&jwk.n)?,
                    e: field(&jwk.e)?,
                };
                let key = parts
                    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                    .map_err(rejected)?;
                (Algorithm::RS256, key)
            }
            ("EC", Some("P-256")) => {
                let (x, y) = (field(&jwk.x)?, field(&jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(CryptoError::KeyRejected(
                        "P-256 coordinates must be 32 bytes".into(),
                    ));
                }
                let point = [&[0x04u8][..], &x, &y].concat();
                (
                    Algorithm::ES256,
                    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(rejected)?,
                )
            }
            ("OKP", Some("Ed25519")) => (
                Algorithm::EdDSA,
                ParsedPublicKey::new(&ED25519, field(&jwk.x)?).map_err(rejected)?,
            ),
            (kty, crv) => {
                return Err(CryptoError::UnsupportedAlgorithm(format!(
                    "kty {kty} crv {crv:?}"
                )));
            }
        };
        if let Some(named) = jwk.alg.as_deref()
            && named != alg.as_str()
        {
            return Err(CryptoError::KeyRejected(format!(
                "JWK alg {named} does not fit its key type"
            )));
        }
        Ok(Self {
            kid: jwk.kid.clone(),
            alg,
            key,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Verifies a parsed token's signature with this key's own algorithm.
    pub fn verify(&self, token: &CompactJws<'_>) -> Result<()> {
        if token.header.alg != self.alg.as_str() {
            return Err(CryptoError::BadSignature);
        }
        self.key
            .verify_sig(token.signing_input.as_bytes(), &token.signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// The JOSE header members a verifier looks at.
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    /// RFC 7515 §4.1.11: a token naming extensions we do not understand
    /// must be rejected.
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// A compact JWS split into its parts, signature not yet checked.
#[derive(Debug)]
pub struct CompactJws<'a> {
    pub header: JoseHeader,
    /// `BASE64URL(header) . BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

impl<'a> CompactJws<'a> {
    pub fn parse(token: &'a str) -> Result<Self> {
        let mut parts = token.splitn(3, '.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::MalformedToken);
        };
        if signature_b64.contains('.') {
            return Err(CryptoError::MalformedToken);
        }
        let header_json = b64url_decode(header_b64).ok_or(CryptoError::MalformedToken)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| CryptoError::MalformedToken)?;
        if header.crit.is_some() {
            return Err(CryptoError::MalformedToken);
        }
        let signature = b64url_decode(signature_b64).ok_or(CryptoError::MalformedToken)?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            header,
            signing_input,
            payload_b64,
            signature,
        })
    }

    /// The decoded payload bytes (trust them only after [`VerifyingKey::verify`]).
    pub fn payload(&self) -> Result<Vec<u8>> {
        b64url_decode(self.payload_b64).ok_or(CryptoError::MalformedToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(alg: Algorithm) {
        let key = SigningKey::generate(alg, "k1").unwrap();
        let token = key.sign("at+jwt", &json!({"sub": "alice"})).unwrap();
        let verifier = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
        assert_eq!(verifier.alg(), alg);
        let jws = CompactJws::parse(&token).unwrap();
        assert_eq!(jws.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        verifier.verify(&jws).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&jws.payload().unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");

        let reloaded = SigningKey::from_pkcs8(alg, "k1", &key.to_pkcs8().unwrap()).unwrap();
        assert_eq!(reloaded.public_jwk(), key.public_jwk());
    }

    #[test]
    fn every_algorithm_roundtrips() {
        for alg in Algorithm::ALL {
            roundtrip(alg);
        }
    }

    #[test]
    fn tampered_payload_fails() {
        let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
        let token = key.sign("JWT", &json!({"sub": "alice"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url(br#"{"sub":"admin"}"#),
            parts[2]
        );
        let verifier = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
        let jws = CompactJws::parse(&forged).unwrap();
        assert!(verifier.verify(&jws).is_err());
    }

    #[test]
    fn header_algorithm_must_match_the_key() {
        let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
        let verifier = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
        let token = key.sign("JWT", &json!({})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        for alg in ["none", "HS256", "RS256", "ES384"] {
            let header = b64url(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
            let forged = format!("{header}.{}.{}", parts[1], parts[2]);
            let jws = CompactJws::parse(&forged).unwrap();
            assert!(verifier.verify(&jws).is_err(), "{alg} accepted");
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.!!"] {
            assert!(CompactJws::parse(bad).is_err(), "{bad}");
        }
        let crit = format!("{}.e30.", b64url(br#"{"alg":"ES256","crit":["exp"]}"#));
        assert!(CompactJws::parse(&crit).is_err());
    }

    #[test]
    fn symmetric_and_mismatched_jwks_are_rejected() {
        let oct = Jwk {
            kty: "oct".into(),
            kid: None,
            alg: Some("HS256".into()),
            use_: None,
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
        };
        assert!(VerifyingKey::from_jwk(&oct).is_err());
        let mut jwk = SigningKey::generate(Algorithm::ES256, "k")
            .unwrap()
            .public_jwk();
        jwk.alg = Some("RS256".into());
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
    }
}
