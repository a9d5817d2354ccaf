//! Signed checkpoints: the chain's size and head, signed by the log.
//!
//! A checkpoint is a C2SP tlog-checkpoint body (<https://c2sp.org/tlog-checkpoint>)
//! inside a C2SP signed note (<https://c2sp.org/signed-note>) with an Ed25519
//! signature (signature type `0x01`). Publishing these lets anyone holding the
//! verifier key later prove that rows were removed, rewritten or cut off (see
//! [`crate::chain::ChainVerifier`]), even by someone with write access to the
//! database, as long as the signing key stayed out of reach.
//!
//! Note: the third line of a tlog-checkpoint is meant to be an RFC 6962 Merkle
//! tree root; here it is the head of a linear hash chain. The text format is
//! the same, so generic note tooling can verify the signature, but log
//! monitors that expect Merkle consistency proofs cannot audit this log.
//!
//! Formats, per the specs:
//!
//! ```text
//! body     = origin "\n" size "\n" base64(head) "\n" "time " seconds "\n"
//! note     = body "\n" "— " key-name " " base64(key-id ‖ signature) "\n"
//! key-id   = SHA-256(key-name ‖ 0x0A ‖ 0x01 ‖ public-key)[:4]
//! vkey     = key-name "+" hex8(key-id) "+" base64(0x01 ‖ public-key)
//! ```
//!
//! base64 is the padded standard alphabet (RFC 4648 §4) throughout, as both
//! specs require. The key name is the checkpoint origin.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use echo_crypto::secret::{random_bytes, sha256};

use crate::chain::{Anchor, Hash};

/// The signed-note signature type byte for Ed25519.
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// Signature lines a note may carry. The signed-note spec asks verifiers to
/// bound this and to accept at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// Largest note accepted, so a hostile input cannot make us scan megabytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

const SIG_PREFIX: &str = "\u{2014} ";

/// Checkpoint body: `"<origin>\n<size>\n<base64 std (padded) of head hash>\n"`
/// followed by one extension line `"time <unix seconds>\n"`.
///
/// tlog-checkpoint allows optional extension lines; this log always writes
/// exactly the `time` one, and [`parse_body`](Self::parse_body) accepts exactly
/// that, so a body has one textual form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, also the signing key's name.
    pub origin: String,
    /// Chain length (number of rows, i.e. the seq of the head row).
    pub size: i64,
    /// Stored hash of row `size` ([`crate::chain::GENESIS`] when empty).
    pub head: Hash,
    /// When the checkpoint was made, Unix seconds.
    pub time: i64,
}

/// Why a checkpoint, note or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint body: {0}")]
    MalformedBody(String),
    #[error("malformed signed note: {0}")]
    MalformedNote(String),
    /// The note carries no signature by the given key (signatures by other
    /// keys are ignored, as the signed-note spec requires).
    #[error("note has no signature by key {0}")]
    UnknownKey(String),
    /// A signature line names the given key but does not verify.
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    /// A verifier key, key name or seed that cannot be used.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The signature verified but the checkpoint claims another log: the key
    /// name is the origin by construction, so this is never legitimate.
    #[error("checkpoint origin {origin:?} does not match key name {key:?}")]
    OriginMismatch { origin: String, key: String },
}

fn body_err(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::MalformedBody(reason.into())
}

fn note_err(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::MalformedNote(reason.into())
}

fn key_err(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::BadKey(reason.into())
}

impl Checkpoint {
    /// The note text to sign. `origin` must be a valid line (non-empty, no
    /// newline) and `size` and `time` non-negative, or
    /// [`parse_body`](Self::parse_body) will refuse the result.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.head),
            self.time
        )
    }

    /// Parses a body written by [`body`](Self::body), strictly: four lines,
    /// each ending in a newline; decimal numbers without sign or leading
    /// zeros (tlog-checkpoint's rule for the size); the head as canonical
    /// padded base64 of exactly 32 bytes.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let Some(text) = text.strip_suffix('\n') else {
            return Err(body_err("must end with a newline"));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, head, time] = lines[..] else {
            return Err(body_err(format!(
                "expected 4 lines (origin, size, head, time), found {}",
                lines.len()
            )));
        };
        if origin.is_empty() {
            return Err(body_err("empty origin"));
        }
        if origin.chars().any(char::is_control) {
            return Err(body_err("control character in origin"));
        }
        let size = parse_decimal(size, "size")?;
        let head = decode_hash(head)?;
        let Some(time) = time.strip_prefix("time ") else {
            return Err(body_err("fourth line must be \"time <unix seconds>\""));
        };
        let time = parse_decimal(time, "time")?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            head,
            time,
        })
    }

    /// What the checkpoint commits to, for [`crate::chain::ChainVerifier`].
    pub fn anchor(&self) -> Anchor {
        Anchor {
            size: self.size,
            head: self.head,
        }
    }
}

fn parse_decimal(text: &str, what: &str) -> Result<i64, CheckpointError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(body_err(format!("{what} is not a canonical decimal")));
    }
    text.parse()
        .map_err(|_| body_err(format!("{what} out of range")))
}

fn decode_hash(text: &str) -> Result<Hash, CheckpointError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| body_err(format!("head is not base64: {e}")))?;
    let head: Hash = bytes
        .try_into()
        .map_err(|b: Vec<u8>| body_err(format!("head is {} bytes, not 32", b.len())))?;
    // The engine already refuses bad padding and stray bits; this makes the
    // one-textual-form rule explicit.
    if STANDARD.encode(head) != text {
        return Err(body_err("head is not canonical base64"));
    }
    Ok(head)
}

/// A key name per signed-note: non-empty, no Unicode space, no `+`. Control
/// characters are refused too, as the note may not contain them.
fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The signed-note key ID: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4],
/// big-endian.
fn key_hash(name: &str, public_key: &[u8]) -> u32 {
    let mut data = Vec::with_capacity(name.len() + 2 + public_key.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(SIG_TYPE_ED25519);
    data.extend_from_slice(public_key);
    let digest = sha256(&data);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// An Ed25519 note signer. Its key name is the log's origin; its key hash is
/// the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key).
pub struct NoteSigner {
    name: String,
    key_pair: Ed25519KeyPair,
    seed: [u8; 32],
    key_hash: u32,
}

impl std::fmt::Debug for NoteSigner {
    /// Names the key, never shows the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A new key from the operating system's CSPRNG.
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        Self::from_seed(name, &random_bytes::<32>())
    }

    /// The key for a stored 32-byte RFC 8032 seed. Any 32 bytes are a valid
    /// seed; the name must be a valid signed-note key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        if !valid_key_name(name) {
            return Err(key_err(format!(
                "key name {name:?} must be non-empty, without spaces or '+'"
            )));
        }
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| key_err(format!("Ed25519 seed rejected: {e}")))?;
        let key_hash = key_hash(name, key_pair.public_key().as_ref());
        Ok(NoteSigner {
            name: name.to_owned(),
            key_pair,
            seed: *seed,
            key_hash,
        })
    }

    /// The seed, for storing the key (encrypted) and reloading it with
    /// [`from_seed`](Self::from_seed).
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The key name, which checkpoints must use as their origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note: body, a blank line, then
    /// `"— <name> <base64(key hash ‖ 64-byte signature)>\n"` (U+2014 em dash,
    /// space). The signature covers the body bytes, final newline included.
    ///
    /// `checkpoint.origin` should be [`name`](Self::name): [`verify_note`]
    /// refuses a checkpoint whose origin differs from the key name.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_text(&checkpoint.body())
    }

    fn sign_text(&self, text: &str) -> String {
        let signature = self.key_pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_hash.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }

    /// The verifier key in the signed-note vkey format:
    /// `"<name>+<8 hex digits of key hash>+<base64(0x01 ‖ public key)>"`.
    pub fn verifier_key(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(SIG_TYPE_ED25519);
        key.extend_from_slice(self.key_pair.public_key().as_ref());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_hash,
            STANDARD.encode(key)
        )
    }
}

/// A parsed vkey.
struct VerifierKey {
    name: String,
    key_hash: u32,
    public_key: [u8; 32],
}

impl VerifierKey {
    /// Parses `<name>+<hex8>+<base64(0x01 ‖ key)>` and checks that the key
    /// hash matches the name and key, as golang.org/x/mod/sumdb/note does.
    /// Surrounding whitespace (a trailing newline from a file) is ignored.
    fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let vkey = vkey.trim();
        let (name, rest) = vkey
            .split_once('+')
            .ok_or_else(|| key_err("expected <name>+<hash>+<key>"))?;
        let (hash16, key64) = rest
            .split_once('+')
            .ok_or_else(|| key_err("expected <name>+<hash>+<key>"))?;
        if !valid_key_name(name) {
            return Err(key_err(format!("invalid key name {name:?}")));
        }
        if hash16.len() != 8 || !hash16.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(key_err("key hash must be 8 hex digits"));
        }
        let claimed =
            u32::from_str_radix(hash16, 16).map_err(|_| key_err("key hash must be hex"))?;
        let key = STANDARD
            .decode(key64)
            .map_err(|e| key_err(format!("key is not base64: {e}")))?;
        let Some((&sig_type, public_key)) = key.split_first() else {
            return Err(key_err("empty key"));
        };
        if sig_type != SIG_TYPE_ED25519 {
            return Err(key_err(format!(
                "signature type 0x{sig_type:02x} unsupported (only Ed25519, 0x01)"
            )));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| key_err("Ed25519 public key must be 32 bytes"))?;
        if key_hash(name, &public_key) != claimed {
            return Err(key_err("key hash does not match name and key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_hash: claimed,
            public_key,
        })
    }
}

/// Checks the note's framing and its signature(s) by `key`; returns the
/// signed text (final newline included, separating blank line excluded).
///
/// Per signed-note: the text ends at the last blank line; each following
/// line is `— <name> <base64(key ID ‖ signature)>`; lines from other keys
/// (a different name or key ID) are ignored; a line from this key that does
/// not verify rejects the whole note; at least one must verify.
fn open_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(note_err(format!("longer than {MAX_NOTE_BYTES} bytes")));
    }
    if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(note_err("control character other than newline"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| note_err("no blank line before the signatures"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(note_err(
            "signatures must be non-empty lines ending in newline",
        ));
    };
    let lines: Vec<&str> = signatures.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(note_err(format!("more than {MAX_SIGNATURES} signatures")));
    }
    let verifier = UnparsedPublicKey::new(&ED25519, key.public_key);
    let mut verified = false;
    for line in lines {
        let (name, b64) = line
            .strip_prefix(SIG_PREFIX)
            .and_then(|rest| rest.split_once(' '))
            .ok_or_else(|| note_err("signature line must be \"— <name> <base64>\""))?;
        if !valid_key_name(name) {
            return Err(note_err(format!("invalid key name {name:?}")));
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|e| note_err(format!("signature is not base64: {e}")))?;
        if blob.len() < 5 {
            return Err(note_err("signature too short"));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        if name != key.name || id != key.key_hash {
            continue; // another key's signature (a witness, a rotated key…)
        }
        verifier
            .verify(text.as_bytes(), &blob[4..])
            .map_err(|_| CheckpointError::BadSignature(key.name.clone()))?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(CheckpointError::UnknownKey(key.name.clone()))
    }
}

/// Parses a vkey string, checks a signed note's signature line(s) for that
/// key, and returns the checkpoint. The body is parsed only after the
/// signature verified (signed-note: unverified text must be ignored), and its
/// origin must equal the key name (tlog-checkpoint: the key name SHOULD match
/// the origin; this log always makes it so, so anything else is refused).
pub fn verify_note(note: &str, verifier_key: &str) -> Result<Checkpoint, CheckpointError> {
    let key = VerifierKey::parse(verifier_key)?;
    let text = open_note(note, &key)?;
    let checkpoint = Checkpoint::parse_body(text)?;
    if checkpoint.origin != key.name {
        return Err(CheckpointError::OriginMismatch {
            origin: checkpoint.origin,
            key: key.name,
        });
    }
    Ok(checkpoint)
}

/// The signed notes in `text`, in order, as `echod audit checkpoint >> FILE`
/// leaves them: one after another, each ending after the last signature
/// line that follows its blank line; blank lines between notes are skipped.
/// Each is returned as written (final newline included), to be checked by
/// [`verify_note`]; text that is no note comes back as one too and fails there.
pub fn split_notes(text: &str) -> Vec<&str> {
    let mut notes = Vec::new();
    // Where the current note starts, and whether its signatures have begun.
    let mut start: Option<usize> = None;
    let mut in_signatures = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches('\n');
        match start {
            None if content.is_empty() => {}
            None => start = Some(offset),
            Some(from) if in_signatures && !content.starts_with(SIG_PREFIX) => {
                notes.push(&text[from..offset]);
                in_signatures = false;
                start = (!content.is_empty()).then_some(offset);
            }
            Some(_) if content.is_empty() => in_signatures = true,
            Some(_) => {}
        }
        offset += line.len();
    }
    if let Some(from) = start {
        notes.push(&text[from..]);
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "audit.example.com/log";

    #[test]
    fn appended_notes_split_into_notes_that_verify() {
        let s = signer();
        let notes: Vec<String> = [1, 2, 3]
            .map(|size| {
                s.sign(&Checkpoint {
                    size,
                    ..checkpoint()
                })
            })
            .to_vec();
        let file = format!("\n{}{}\n\n{}", notes[0], notes[1], notes[2]);
        let split = split_notes(&file);
        assert_eq!(split, notes);
        for (note, size) in split.iter().zip(1..) {
            assert_eq!(verify_note(note, &s.verifier_key()).unwrap().size, size);
        }
        assert!(split_notes("\n\n").is_empty());
        // A stray text is one "note" that then fails to verify.
        assert_eq!(split_notes("not a note\n"), ["not a note\n"]);
        assert!(verify_note("not a note\n", &s.verifier_key()).is_err());
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.into(),
            size: 1234,
            head: [0xAB; 32],
            time: 1_700_000_000,
        }
    }

    fn signer() -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, &[7; 32]).unwrap()
    }

    #[test]
    fn body_golden() {
        let c = Checkpoint {
            origin: "example.com/log".into(),
            size: 0,
            head: [0; 32],
            time: 5,
        };
        assert_eq!(
            c.body(),
            "example.com/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime 5\n"
        );
        assert_eq!(Checkpoint::parse_body(&c.body()), Ok(c.clone()));
        assert_eq!(
            c.anchor(),
            Anchor {
                size: 0,
                head: [0; 32]
            }
        );
    }

    #[test]
    fn sign_verify_roundtrip() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let body = checkpoint().body();
        assert!(note.starts_with(&format!("{body}\n\u{2014} {ORIGIN} ")));
        assert!(note.ends_with('\n'));
        assert_eq!(note.lines().count(), 6); // 4 body lines, blank, signature
        assert_eq!(verify_note(&note, &s.verifier_key()), Ok(checkpoint()));
        // Ed25519 is deterministic.
        assert_eq!(s.sign(&checkpoint()), note);
        // A generated key round-trips through its seed.
        let g = NoteSigner::generate(ORIGIN).unwrap();
        let again = NoteSigner::from_seed(ORIGIN, &g.seed()).unwrap();
        assert_eq!(g.verifier_key(), again.verifier_key());
        assert_ne!(g.verifier_key(), s.verifier_key());
        assert_eq!(
            verify_note(&g.sign(&checkpoint()), &again.verifier_key()),
            Ok(checkpoint())
        );
        assert!(!format!("{g:?}").contains(&format!("{:?}", g.seed())));
    }

    #[test]
    fn edited_body_fails() {
        let s = signer();
        let vkey = s.verifier_key();
        let note = s.sign(&checkpoint());
        let original = checkpoint().body();
        let mut edits = Vec::new();
        for edit in [
            Checkpoint {
                size: 1233,
                ..checkpoint()
            },
            Checkpoint {
                head: [0xAC; 32],
                ..checkpoint()
            },
            Checkpoint {
                time: 1,
                ..checkpoint()
            },
        ] {
            edits.push(note.replacen(&original, &edit.body(), 1));
        }
        for edited in edits {
            assert_ne!(edited, note);
            assert_eq!(
                verify_note(&edited, &vkey),
                Err(CheckpointError::BadSignature(ORIGIN.into()))
            );
        }
        // A flipped bit in the signature.
        let sig_start = note.rfind(' ').unwrap() + 1;
        let mut bytes = note.clone().into_bytes();
        bytes[sig_start + 10] = if bytes[sig_start + 10] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            verify_note(&flipped, &vkey),
            Err(CheckpointError::BadSignature(ORIGIN.into()))
        );
    }

    #[test]
    fn other_key_fails() {
        let s = signer();
        let other = NoteSigner::from_seed(ORIGIN, &[8; 32]).unwrap();
        let note = other.sign(&checkpoint());
        // Same name, different key ID: ignored, so no signature by our key.
        assert_eq!(
            verify_note(&note, &s.verifier_key()),
            Err(CheckpointError::UnknownKey(ORIGIN.into()))
        );
        // The other key's signature relabelled with our key ID: checked, fails.
        let blob_start = note.rfind(' ').unwrap() + 1;
        let mut blob = STANDARD.decode(note[blob_start..].trim_end()).unwrap();
        blob[..4].copy_from_slice(&s.key_hash.to_be_bytes());
        let forged = format!("{}{}\n", &note[..blob_start], STANDARD.encode(blob));
        assert_eq!(
            verify_note(&forged, &s.verifier_key()),
            Err(CheckpointError::BadSignature(ORIGIN.into()))
        );
        // A differently named key with its own origin.
        let elsewhere = NoteSigner::from_seed("other.example/log", &[7; 32]).unwrap();
        let note = elsewhere.sign(&Checkpoint {
            origin: "other.example/log".into(),
            ..checkpoint()
        });
        assert_eq!(
            verify_note(&note, &s.verifier_key()),
            Err(CheckpointError::UnknownKey(ORIGIN.into()))
        );
    }

    #[test]
    fn extra_signatures_are_ignored() {
        let s = signer();
        let witness = NoteSigner::from_seed("witness.example/w1", &[9; 32]).unwrap();
        let note = s.sign(&checkpoint());
        let witness_line = witness
            .sign_text(&checkpoint().body())
            .rsplit_once("\n\n")
            .unwrap()
            .1
            .to_owned();
        let both = format!("{note}{witness_line}");
        assert_eq!(verify_note(&both, &s.verifier_key()), Ok(checkpoint()));
        let witness_first = format!(
            "{}\n{witness_line}{}",
            checkpoint().body(),
            note.rsplit_once("\n\n").unwrap().1
        );
        assert_eq!(
            verify_note(&witness_first, &s.verifier_key()),
            Ok(checkpoint())
        );
        assert_eq!(
            verify_note(&both, &witness.verifier_key()),
            Err(CheckpointError::OriginMismatch {
                origin: ORIGIN.into(),
                key: "witness.example/w1".into()
            })
        );
    }

    #[test]
    fn origin_must_match_key_name() {
        let s = signer();
        let note = s.sign(&Checkpoint {
            origin: "not.the/origin".into(),
            ..checkpoint()
        });
        assert!(matches!(
            verify_note(&note, &s.verifier_key()),
            Err(CheckpointError::OriginMismatch { .. })
        ));
    }

    #[test]
    fn verifier_key_format_and_key_hash() {
        let s = signer();
        let vkey = s.verifier_key();
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        assert_eq!(parts[0], ORIGIN);
        let key = STANDARD.decode(parts[2]).unwrap();
        assert_eq!(key.len(), 33);
        assert_eq!(key[0], 0x01);
        assert_eq!(&key[1..], s.key_pair.public_key().as_ref());
        // The spec's computation, spelled out.
        let mut data = ORIGIN.as_bytes().to_vec();
        data.push(0x0A);
        data.push(0x01);
        data.extend_from_slice(&key[1..]);
        let digest = sha256(&data);
        let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parts[1], expected);
        let parsed = VerifierKey::parse(&vkey).unwrap();
        assert_eq!(parsed.name, ORIGIN);
        assert_eq!(format!("{:08x}", parsed.key_hash), expected);
        assert!(VerifierKey::parse(&format!("{vkey}\n")).is_ok());
    }

    /// golang.org/x/mod/sumdb/note's published example key and signed note:
    /// our key hash, vkey, signature and framing match the reference
    /// implementation byte for byte.
    #[test]
    fn go_sumdb_note_known_answer() {
        let skey_data = STANDARD
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
        assert_eq!(skey_data[0], SIG_TYPE_ED25519);
        let seed: [u8; 32] = skey_data[1..].try_into().unwrap();
        let s = NoteSigner::from_seed("PeterNeumann", &seed).unwrap();
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert_eq!(s.verifier_key(), vkey);
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = format!(
            "{text}\n\u{2014} PeterNeumann \
             x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
        assert_eq!(s.sign_text(text), note);
        let key = VerifierKey::parse(vkey).unwrap();
        assert_eq!(open_note(&note, &key), Ok(text));
        // Verified, but not a checkpoint body.
        assert!(matches!(
            verify_note(&note, vkey),
            Err(CheckpointError::MalformedBody(_))
        ));
        let tampered = note.replace("cryptography", "cryptographY");
        assert_eq!(
            open_note(&tampered, &key),
            Err(CheckpointError::BadSignature("PeterNeumann".into()))
        );
    }

    #[test]
    fn bad_verifier_keys() {
        let vkey = signer().verifier_key();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (hash, key) = rest.split_once('+').unwrap();
        let raw = STANDARD.decode(key).unwrap();
        let mut wrong_type = raw.clone();
        wrong_type[0] = 0x02;
        let short = &raw[..32];
        let flipped_hash = format!("{:08x}", u32::from_str_radix(hash, 16).unwrap() ^ 1);
        let cases = [
            String::new(),
            name.to_owned(),
            format!("{name}+{hash}"),
            format!("{name}+{flipped_hash}+{key}"),
            format!("{name}+{}+{key}", &hash[..7]),
            format!("{name}+{hash}0+{key}"),
            format!("{name}+zzzzzzzz+{key}"),
            format!("{name}+{hash}+{}", STANDARD.encode(&wrong_type)),
            format!("{name}+{hash}+{}", STANDARD.encode(short)),
            format!("{name}+{hash}+{}", &key[..key.len() - 1]),
            format!("{name}+{hash}+!!!!"),
            format!("+{hash}+{key}"),
            format!("other+{hash}+{key}"),
            format!("a b+{hash}+{key}"),
        ];
        for case in cases {
            assert!(
                matches!(VerifierKey::parse(&case), Err(CheckpointError::BadKey(_))),
                "{case:?}"
            );
            let note = signer().sign(&checkpoint());
            assert!(verify_note(&note, &case).is_err());
        }
    }

    #[test]
    fn bad_key_names() {
        for name in ["", "a b", "a+b", "tab\there", "a\u{00a0}b", "new\nline"] {
            assert!(
                matches!(
                    NoteSigner::from_seed(name, &[1; 32]),
                    Err(CheckpointError::BadKey(_))
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn parse_body_rejects() {
        let head = STANDARD.encode([1u8; 32]);
        let cases = [
            String::new(),
            "\n".into(),
            format!("o\n1\n{head}\ntime 1"),      // no final newline
            format!("o\n1\n{head}\n"),            // no time line
            "o\n1\n".into(),                      // missing head and time
            "o\n".into(),                         // only origin
            format!("\n1\n{head}\ntime 1\n"),     // empty origin
            format!("o\n1\n{head}\ntime 1\nx\n"), // extra extension
            format!("o\n1\n{head}\ntime 1\n\n"),  // trailing blank line
            format!("o\n12a\n{head}\ntime 1\n"),
            format!("o\n-1\n{head}\ntime 1\n"),
            format!("o\n+1\n{head}\ntime 1\n"),
            format!("o\n01\n{head}\ntime 1\n"),
            format!("o\n\n{head}\ntime 1\n"),
            format!("o\n 1\n{head}\ntime 1\n"),
            format!("o\n99999999999999999999\n{head}\ntime 1\n"),
            format!("o\n١\n{head}\ntime 1\n"), // non-ASCII digit
            "o\n1\nnot base64!\ntime 1\n".into(),
            format!("o\n1\n{}\ntime 1\n", head.trim_end_matches('=')),
            format!("o\n1\n{}\ntime 1\n", STANDARD.encode([1u8; 31])),
            format!("o\n1\n{}\ntime 1\n", STANDARD.encode([1u8; 33])),
            format!(
                "o\n1\n{}\ntime 1\n",
                base64::engine::general_purpose::URL_SAFE.encode([0xFBu8; 32])
            ),
            format!("o\n1\n{head}\ntime1\n"),
            format!("o\n1\n{head}\ntime -1\n"),
            format!("o\n1\n{head}\nsize 1\n"),
            format!("o\r\n1\n{head}\ntime 1\n"),
        ];
        for case in cases {
            assert!(
                matches!(
                    Checkpoint::parse_body(&case),
                    Err(CheckpointError::MalformedBody(_))
                ),
                "{case:?}"
            );
        }
        assert!(Checkpoint::parse_body(&format!("o\n0\n{head}\ntime 0\n")).is_ok());
    }

    #[test]
    fn malformed_notes() {
        let s = signer();
        let vkey = s.verifier_key();
        let note = s.sign(&checkpoint());
        let body = checkpoint().body();
        let sig_line = note.rsplit_once("\n\n").unwrap().1;
        let cases = [
            body.clone(),                                         // unsigned
            format!("{body}\n"),                                  // blank line, no signature
            format!("{body}{sig_line}"),                          // no blank line
            note.trim_end().to_owned(),                           // signature without newline
            note.replacen('\u{2014}', "-", 1),                    // not an em dash
            format!("{body}\n{}", sig_line.replacen(' ', "", 1)), // no space after dash
            format!("{body}\n\u{2014} {ORIGIN}\n"),               // no signature
            format!("{body}\n\u{2014} {ORIGIN} AAAA\n"),          // too short
            format!("{body}\n\u{2014} {ORIGIN} ***\n"),           // not base64
            format!("{body}\n{sig_line}\n"),                      // empty line after
            note.replacen("time", "ti\rme", 1),                   // control character
            format!("{body}\n{}", sig_line.repeat(MAX_SIGNATURES + 1)),
            format!("{}\n{sig_line}", "x".repeat(MAX_NOTE_BYTES)),
        ];
        for case in cases {
            assert!(
                matches!(
                    verify_note(&case, &vkey),
                    Err(CheckpointError::MalformedNote(_))
                ),
                "{case:?}"
            );
        }
    }
}
