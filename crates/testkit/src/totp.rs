//! The code an authenticator app shows, computed apart from identity's
//! own implementation, so tests can sign in with a second factor.

use aws_lc_rs::hmac;

/// RFC 4648 §6 base32 (no padding) to bytes.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.chars() {
        let value = ALPHABET.find(c).expect("base32 character") as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret at `unix`.
pub fn totp(secret: &str, unix: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &base32_decode(secret));
    let mac = hmac::sign(&key, &((unix / 30) as u64).to_be_bytes());
    let mac = mac.as_ref();
    let at = usize::from(mac[19] & 0x0f);
    let value = u32::from_be_bytes([mac[at], mac[at + 1], mac[at + 2], mac[at + 3]]) & 0x7fff_ffff;
    format!("{:06}", value % 1_000_000)
}

#[cfg(test)]
mod tests {
    /// RFC 6238 appendix B, SHA-1, at 59 s: 94287082 (the last 6 digits).
    #[test]
    fn matches_the_rfc_vector() {
        // "12345678901234567890" in base32.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(super::totp(secret, 59), "287082");
    }
}
