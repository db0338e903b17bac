//! Webhook authentication: the `X-Hub-Signature-256` / `X-Hub-Signature` HMAC over the raw
//! body bytes as received, and the verify-token check of the subscription handshake. Every
//! comparison is constant time; a missing or malformed header, a wrong prefix or a wrong
//! length is a failure.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The signature a webhook call claims, read from its headers before its body arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    Sha256(Vec<u8>),
    Sha1(Vec<u8>),
}

/// Reads the signature headers of a webhook call. `sha256` is the value of
/// `X-Hub-Signature-256`, `sha1` that of `X-Hub-Signature`. When the SHA-256 header is present
/// it alone decides; the SHA-1 header is used only without it, and not at all when
/// `require_sha256` is set. The error says why, for the log (never the expected value).
pub fn claimed(
    secret: &str,
    sha256: Option<&str>,
    sha1: Option<&str>,
    require_sha256: bool,
) -> Result<Claimed, &'static str> {
    if secret.is_empty() {
        return Err("no appSecret is configured");
    }
    if let Some(header) = sha256 {
        let hex_part = header
            .trim()
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 does not start with sha256=")?;
        let tag = decode(hex_part, 32).ok_or("X-Hub-Signature-256 is not 64 hex digits")?;
        return Ok(Claimed::Sha256(tag));
    }
    if require_sha256 {
        return Err("X-Hub-Signature-256 is missing (requireSha256 is on)");
    }
    let header = sha1.ok_or("X-Hub-Signature-256 and X-Hub-Signature are both missing")?;
    let hex_part = header
        .trim()
        .strip_prefix("sha1=")
        .ok_or("X-Hub-Signature does not start with sha1=")?;
    let tag = decode(hex_part, 20).ok_or("X-Hub-Signature is not 40 hex digits")?;
    Ok(Claimed::Sha1(tag))
}

impl Claimed {
    /// Whether the claimed HMAC is the body's, compared in constant time.
    pub fn matches(&self, secret: &str, body: &[u8]) -> Result<(), &'static str> {
        match self {
            Claimed::Sha256(tag) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad key")?;
                mac.update(body);
                mac.verify_slice(tag)
                    .map_err(|_| "X-Hub-Signature-256 does not match the body")
            }
            Claimed::Sha1(tag) => {
                let mut mac =
                    Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|_| "bad key")?;
                mac.update(body);
                mac.verify_slice(tag)
                    .map_err(|_| "X-Hub-Signature does not match the body")
            }
        }
    }
}

/// Both steps at once: the headers, then the body.
pub fn verify(
    secret: &str,
    body: &[u8],
    sha256: Option<&str>,
    sha1: Option<&str>,
    require_sha256: bool,
) -> Result<(), &'static str> {
    claimed(secret, sha256, sha1, require_sha256)?.matches(secret, body)
}

fn decode(hex_text: &str, len: usize) -> Option<Vec<u8>> {
    if hex_text.len() != 2 * len {
        return None;
    }
    hex::decode(hex_text).ok()
}

pub use crate::channels::same_secret;

/// `sha256=<hex>` of `body`, as Facebook sends it (for tests and tools).
pub fn sign_sha256(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `sha1=<hex>` of `body`, the legacy header.
pub fn sign_sha1(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_both_headers() {
        let body = "{\"text\":\"h\\u00e9llo \u{e9}\"}".as_bytes();
        let s256 = sign_sha256("s3cret", body);
        let s1 = sign_sha1("s3cret", body);
        assert_eq!(verify("s3cret", body, Some(&s256), None, false), Ok(()));
        assert_eq!(verify("s3cret", body, Some(&s256), None, true), Ok(()));
        assert_eq!(verify("s3cret", body, None, Some(&s1), false), Ok(()));
        assert!(verify("s3cret", body, None, Some(&s1), true).is_err());
        // Upper-case hex is the same digest.
        assert_eq!(
            verify(
                "s3cret",
                body,
                None,
                Some(&s1.to_uppercase().replace("SHA1=", "sha1=")),
                false
            ),
            Ok(())
        );
        // A present but wrong SHA-256 header is not rescued by a good SHA-1 one.
        let wrong = sign_sha256("other", body);
        assert!(verify("s3cret", body, Some(&wrong), Some(&s1), false).is_err());
        for bad in [
            "",
            "sha256",
            "sha256=",
            "sha1=abcd",
            "md5=00",
            &s256[..70],
            &s256.replace("sha256=", "sha256=zz")[..71],
        ] {
            assert!(
                verify("s3cret", body, Some(bad), None, false).is_err(),
                "{bad}"
            );
        }
        assert!(
            verify("s3cret", body, None, Some(&s256), false).is_err(),
            "sha256 value in the sha1 header"
        );
        assert!(verify("s3cret", body, None, None, false).is_err());
        assert!(verify("", body, Some(&sign_sha256("", body)), None, false).is_err());
        assert!(verify("s3cret", b"{\"text\":\"other\"}", Some(&s256), None, false).is_err());
    }

    #[test]
    fn verify_token() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("", ""));
        assert!(!same_secret("abc", "abcd"));
    }
}
