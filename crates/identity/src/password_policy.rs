//! What a new password must be, wherever one is set (`echod user add`,
//! activation of an invited user, the account page, a reset link): at
//! least [`MIN_PASSWORD_LEN`] characters, at most [`MAX_PASSWORD_LEN`], and
//! not one of the 30,000 most common passwords (NIST SP 800-63B §5.1.1.2:
//! check against values "known to be commonly-used").
//!
//! The list is `common-passwords.txt` beside this crate's manifest, one
//! lowercase password a line, compiled into the binary (from the MIT
//! licensed zxcvbn frequency lists); it is read into a set once, on first
//! use. The comparison ignores case, so `Password1` is as common as
//! `password1`.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::{IdentityError, Result};

/// Shortest password accepted (NIST SP 800-63B).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted: argon2 hashes any length, but a megabyte of
/// "password" should not cost the server a megabyte of hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../common-passwords.txt").lines().collect());

/// `Ok` if `password` may be set; else why not, in words for the user.
pub fn check(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(IdentityError::WeakPassword(format!(
            "password too short: at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if chars > MAX_PASSWORD_LEN {
        return Err(IdentityError::WeakPassword(format!(
            "password too long: at most {MAX_PASSWORD_LEN} characters"
        )));
    }
    if COMMON.contains(password.to_lowercase().as_str()) {
        return Err(IdentityError::WeakPassword(
            "this password is one of the most common ones: choose another".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_large_and_clean() {
        assert!(COMMON.len() >= 10_000, "{}", COMMON.len());
        assert!(
            COMMON
                .iter()
                .all(|p| !p.is_empty() && *p == p.to_lowercase())
        );
    }

    #[test]
    fn short_long_and_common_passwords_are_refused() {
        for weak in ["short", "password", "Password1", "QWERTYUIOP", "iloveyou"] {
            assert!(
                matches!(check(weak), Err(IdentityError::WeakPassword(_))),
                "{weak}"
            );
        }
        assert!(check(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        let short = check("1234567").unwrap_err().to_string();
        assert!(short.contains("at least 8"), "{short}");
        let common = check("password123").unwrap_err().to_string();
        assert!(common.contains("most common"), "{common}");
        for fine in ["correct horse battery staple", "Tr0ub4dor&3-lantern"] {
            assert!(check(fine).is_ok(), "{fine}");
        }
    }
}
