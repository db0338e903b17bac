//! HS256 JSON Web Tokens as Botpress's admin API issues them (`aud: "web-login"`), for the
//! secured Converse route and `botd token`.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const AUDIENCE: &str = "web-login";

/// Makes a token for `email`, valid for `ttl_secs` from `now_secs`.
pub fn sign(secret: &str, email: &str, now_secs: i64, ttl_secs: i64) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({"email": email, "isSuperAdmin": true, "iat": now_secs, "exp": now_secs + ttl_secs, "aud": AUDIENCE});
    let claims = b64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{claims}");
    let signature = b64url(
        &mac(secret, signing_input.as_bytes())
            .finalize()
            .into_bytes(),
    );
    format!("{signing_input}.{signature}")
}

/// Checks signature (constant time), algorithm, audience and expiry; returns the claims.
pub fn verify(secret: &str, token: &str, now_secs: i64) -> Result<Value, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let header: Value = b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed header")?;
    if header["alg"] != "HS256" {
        return Err("unsupported algorithm");
    }
    let signature = b64url_decode(s).ok_or("malformed signature")?;
    let m = mac(secret, format!("{h}.{c}").as_bytes());
    m.verify_slice(&signature).map_err(|_| "bad signature")?;
    let claims: Value = b64url_decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed claims")?;
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == AUDIENCE,
        Value::Array(list) => list.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    if !audience_ok {
        return Err("wrong audience");
    }
    match claims["exp"].as_f64() {
        Some(exp) if (now_secs as f64) < exp => Ok(claims),
        Some(_) => Err("expired"),
        None => Err("no expiry"),
    }
}

fn mac(secret: &str, data: &[u8]) -> Hmac<Sha256> {
    let mut m =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    m.update(data);
    m
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        buf = buf << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    // Only the canonical encoding: a lone trailing character, or leftover bits that are not
    // zero, would let several strings decode to one signature.
    if bits >= 6 || buf != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0xfe, 0x00],
        ] {
            assert_eq!(b64url_decode(&b64url(data)).unwrap(), data);
        }
        assert_eq!(b64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert!(b64url_decode("a*b").is_none());
        // Non-canonical trailing bits are refused ("-_8" is canonical for fb ff; "-_9" is not).
        assert!(b64url_decode("-_9").is_none());
        assert!(b64url_decode("Zm9vYmFyA").is_none());
    }

    #[test]
    fn tokens_verify_only_when_everything_holds() {
        let t = sign("s3cret", "a@b.c", 1000, 60);
        assert_eq!(verify("s3cret", &t, 1010).unwrap()["email"], "a@b.c");
        assert_eq!(verify("s3cret", &t, 1060), Err("expired"));
        assert_eq!(verify("other", &t, 1010), Err("bad signature"));
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 3, 'x');
        assert!(verify("s3cret", &tampered, 1010).is_err());
        assert!(verify("s3cret", "a.b", 1010).is_err());
        // A token for another audience, correctly signed.
        let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = b64url(br#"{"aud":"collaborators","exp":99999}"#);
        let sig = b64url(
            &mac("s3cret", format!("{header}.{claims}").as_bytes())
                .finalize()
                .into_bytes(),
        );
        assert_eq!(
            verify("s3cret", &format!("{header}.{claims}.{sig}"), 1010),
            Err("wrong audience")
        );
    }
}
