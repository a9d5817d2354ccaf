//! The master key: encrypts private keys at rest and derives sub-keys.
//!
//! It comes from `ECHO_MASTER_KEY` or a 0600 file, never from the database,
//! so a copy of the database alone reveals no private key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;

use crate::secret::{b64url, b64url_decode, random_bytes};
use crate::{CryptoError, Result};

/// 32 secret bytes. Debug output never shows them.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        Self(random_bytes::<32>())
    }

    /// Parses 32 bytes written as base64url (43 characters) or hex (64).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|_| CryptoError::MasterKeyFormat)?
        } else {
            b64url_decode(text.trim_end_matches('=')).ok_or(CryptoError::MasterKeyFormat)?
        };
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::MasterKeyFormat)?;
        Ok(Self(array))
    }

    /// The base64url text form that [`MasterKey::parse`] reads.
    pub fn encode(&self) -> String {
        b64url(&self.0)
    }

    fn aead_key(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Unseal)
    }

    /// AES-256-GCM with a random nonce; `aad` binds the ciphertext to its
    /// owner (a key id), so sealed blobs cannot be swapped between rows.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut in_out = plaintext.to_vec();
        self.aead_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Signing)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .aead_key()?
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| CryptoError::Unseal)?;
        Ok(plain.to_vec())
    }

    /// A sealing key for one purpose (`label`), so what one use seals
    /// another cannot open.
    pub fn derive(&self, label: &str) -> MasterKey {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            label.as_bytes(),
        );
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(derived.as_ref());
        MasterKey(bytes)
    }

    /// A key for one purpose (`label`), so no two uses share key material.
    pub fn subkey(&self, label: &str) -> hmac::Key {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            label.as_bytes(),
        );
        hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_roundtrip_and_binding() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"kid-1", b"secret bytes").unwrap();
        assert_eq!(key.open(b"kid-1", &sealed).unwrap(), b"secret bytes");
        assert!(key.open(b"kid-2", &sealed).is_err(), "aad binds the owner");
        assert!(MasterKey::generate().open(b"kid-1", &sealed).is_err());
        assert!(key.open(b"kid-1", &sealed[..5]).is_err());
        let derived = key.derive("purpose");
        assert_eq!(derived.0, key.derive("purpose").0);
        assert!(
            derived.open(b"kid-1", &sealed).is_err(),
            "a derived key is another key"
        );
        assert_ne!(derived.0, key.derive("other").0);
    }

    #[test]
    fn parse_accepts_base64url_and_hex_only_of_32_bytes() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.encode()).unwrap().0, key.0);
        let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(MasterKey::parse(&hex).unwrap().0, key.0);
        assert!(MasterKey::parse("short").is_err());
        assert!(format!("{key:?}") == "MasterKey(..)");
    }
}
