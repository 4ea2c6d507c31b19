// SQL injection blacklist checker - matches C implementation exactly

use super::data;

/// Check if a fingerprint is blacklisted
/// This matches libinjection_sqli_blacklist from the C version
pub fn is_blacklisted(fingerprint: &[u8]) -> bool {
    // v0 fingerprint (up to 5 chars, mixed case) to v1: '0' prefix, upper case.
    if fingerprint.is_empty() || fingerprint.len() > 7 {
        return false;
    }
    let mut fp2 = [0u8; 8];
    fp2[0] = b'0';
    for (d, s) in fp2[1..].iter_mut().zip(fingerprint) {
        *d = s.to_ascii_uppercase();
    }
    data::lookup(&fp2[..=fingerprint.len()]) == Some(super::TokenType::Fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_blacklist() {
        assert!(is_blacklisted(b"s&sos"));
        assert!(is_blacklisted(b"1UE1c"));
        assert!(!is_blacklisted(b"1k"));
        assert!(!is_blacklisted(b""));
    }
}
