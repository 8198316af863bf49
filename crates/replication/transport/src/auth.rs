//! Shared-secret challenge-response authentication (HMAC-SHA256); the secret never goes on the wire.
//!
//! Used by the peer hello of the TCP transport and reusable by any other protocol (the
//! client protocol) that authenticates both ends of a connection with a shared secret.
//!
//! # Protocol
//!
//! Two parties, an *initiator* I (the side that connects) and a *responder* R, share a
//! [`Secret`] and agree on two distinct context labels, one per role (e.g.
//! `b"…/initiator"` and `b"…/responder"`), and a *transcript*: bytes that name the
//! protocol, its version and both identities (for example both node ids). Then:
//!
//! 1. I → R: its identity and a fresh nonce `n_I` (from [`nonce`]).
//! 2. R → I: its identity, a fresh nonce `n_R` and
//!    `p_R = prove(secret, label_R, challenge = n_I, own = n_R, transcript)`.
//! 3. I checks `verify(secret, label_R, n_I, n_R, transcript, p_R)`; only if it holds does
//!    it send `p_I = prove(secret, label_I, challenge = n_R, own = n_I, transcript)`.
//! 4. R checks `verify(secret, label_I, n_R, n_I, transcript, p_I)`.
//!
//! Each side proves over the nonce the *other* side just chose, so a proof captured from
//! an earlier connection does not verify on a new one (the challenge has changed). The
//! labels differ per role, so a proof one side produced cannot be reflected back to it
//! as if it came from the other role. The transcript binds the identities, so a proof
//! made for one pair of nodes is useless between another pair. A failed check closes the
//! connection; comparisons are constant-time.
//!
//! The proof is an HMAC-SHA256, keyed by SHA-256 of a domain tag and the secret, over the
//! domain tag, the label, both nonces and the transcript, with the variable-length parts
//! length-prefixed so no two inputs encode alike.
//!
//! This authenticates the *handshake* only; it does not protect the bytes that follow
//! against an active man-in-the-middle. Use TLS (see [`crate::tls`]) for confidentiality
//! and integrity of the stream.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Fewest bytes a [`Secret`] may have.
pub const MIN_SECRET_LEN: usize = 16;
/// Bytes of a [`Nonce`] and of a proof.
pub const PROOF_LEN: usize = 32;
/// Domain tag that opens every proved message (changes if the construction ever does).
const DOMAIN: &[u8] = b"mako-auth-v1";

/// A random challenge; fresh for every connection.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 proof of knowledge of the secret.
pub type Proof = [u8; PROOF_LEN];

/// Why a secret could not be made or loaded.
#[derive(thiserror::Error, Debug)]
pub enum AuthError {
    /// The secret has no bytes.
    #[error("the secret is empty")]
    Empty,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("the secret has {len} bytes; at least {min} are required")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// Bytes required.
        min: usize,
    },
    /// The secret file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret file's contents are not a valid secret.
    #[error("secret file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with its contents.
        source: Box<AuthError>,
    },
}

/// A shared secret of at least [`MIN_SECRET_LEN`] bytes. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps `bytes`; refuses an empty secret or one shorter than [`MIN_SECRET_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, AuthError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(AuthError::Empty),
            len if len < MIN_SECRET_LEN => Err(AuthError::TooShort {
                len,
                min: MIN_SECRET_LEN,
            }),
            _ => Ok(Secret(bytes)),
        }
    }

    /// Reads a secret from a file; trailing whitespace (a final newline) is not part of it.
    pub fn from_file(path: &Path) -> Result<Secret, AuthError> {
        let shown = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|source| AuthError::Read {
            path: shown.clone(),
            source,
        })?;
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        Secret::new(bytes).map_err(|e| AuthError::File {
            path: shown,
            source: Box::new(e),
        })
    }

    /// HMAC keyed by `SHA-256(domain || secret)`: raw HMAC would treat a secret and the
    /// same secret with trailing zero bytes as one key.
    fn mac(&self) -> Hmac<Sha256> {
        let key = Sha256::new()
            .chain_update(DOMAIN)
            .chain_update(&self.0)
            .finalize();
        // HMAC takes keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC accepts any key length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: do not leave the key bytes in freed memory.
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A fresh random nonce from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn nonce() -> Nonce {
    let mut n = [0u8; 32];
    rand::rng().fill_bytes(&mut n);
    n
}

/// The keyed MAC over the label, both nonces and the transcript (see the module docs).
fn message(
    secret: &Secret,
    label: &[u8],
    challenge: &Nonce,
    own: &Nonce,
    transcript: &[u8],
) -> Hmac<Sha256> {
    let mut mac = secret.mac();
    mac.update(DOMAIN);
    mac.update(&(label.len() as u64).to_le_bytes());
    mac.update(label);
    mac.update(challenge);
    mac.update(own);
    mac.update(&(transcript.len() as u64).to_le_bytes());
    mac.update(transcript);
    mac
}

/// Proof that the sender knows `secret`, bound to a role `label`, the peer's `challenge`,
/// the sender's `own` nonce and the `transcript` (identities).
pub fn prove(
    secret: &Secret,
    label: &[u8],
    challenge: &Nonce,
    own: &Nonce,
    transcript: &[u8],
) -> Proof {
    message(secret, label, challenge, own, transcript)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is [`prove`]'s result for the same inputs; compares in constant time.
pub fn verify(
    secret: &Secret,
    label: &[u8],
    challenge: &Nonce,
    own: &Nonce,
    transcript: &[u8],
    proof: &Proof,
) -> bool {
    message(secret, label, challenge, own, transcript)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const L_I: &[u8] = b"test/initiator";
    const L_R: &[u8] = b"test/responder";

    fn secret(b: u8) -> Secret {
        Secret::new(vec![b; 32]).unwrap()
    }

    #[test]
    fn secret_rules_and_debug() {
        assert!(matches!(Secret::new(Vec::new()), Err(AuthError::Empty)));
        assert!(matches!(
            Secret::new(vec![1u8; 15]),
            Err(AuthError::TooShort { len: 15, min: 16 })
        ));
        let s = Secret::new(b"0123456789abcdef".to_vec()).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(..))");
    }

    #[test]
    fn secret_from_file_trims_the_newline_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("mako-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, b"0123456789abcdef\n").unwrap();
        let s = Secret::from_file(&good).unwrap();
        let n = nonce();
        let p = prove(&s, L_I, &n, &n, b"t");
        let same = Secret::new(b"0123456789abcdef".to_vec()).unwrap();
        assert!(verify(&same, L_I, &n, &n, b"t", &p));
        let short = dir.join("short");
        std::fs::write(&short, b"abc\n").unwrap();
        let e = Secret::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("short") && e.contains("3 bytes"), "{e}");
        let e = Secret::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
        assert_ne!(nonce(), [0u8; 32]);
    }

    #[test]
    fn proof_verifies_and_every_change_breaks_it() {
        let s = secret(7);
        let (c, o) = (nonce(), nonce());
        let t = b"ids 1 2";
        let p = prove(&s, L_R, &c, &o, t);
        assert!(verify(&s, L_R, &c, &o, t, &p));
        // Deterministic for equal inputs.
        assert_eq!(p, prove(&s, L_R, &c, &o, t));
        // Wrong secret, also one that differs by a trailing zero (plain HMAC pads keys).
        assert!(!verify(&secret(8), L_R, &c, &o, t, &p));
        assert!(!verify(
            &Secret::new([vec![7u8; 32], vec![0]].concat()).unwrap(),
            L_R,
            &c,
            &o,
            t,
            &p
        ));
        // Wrong label: a responder's proof reflected as an initiator's.
        assert!(!verify(&s, L_I, &c, &o, t, &p));
        // Nonces swapped (the proof of the other direction) or replaced (a replay).
        assert!(!verify(&s, L_R, &o, &c, t, &p));
        assert!(!verify(&s, L_R, &nonce(), &o, t, &p));
        assert!(!verify(&s, L_R, &c, &nonce(), t, &p));
        // Wrong transcript (other identities), including a shifted boundary.
        assert!(!verify(&s, L_R, &c, &o, b"ids 1 3", &p));
        assert!(!verify(&s, b"test/responde", &c, &o, b"rids 1 2", &p));
        // Any flipped bit of the proof.
        for bit in 0..PROOF_LEN * 8 {
            let mut q = p;
            q[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&s, L_R, &c, &o, t, &q), "bit {bit}");
        }
    }
}
