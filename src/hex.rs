//! Lowercase hexadecimal: how seawall writes bytes as text (request and event ids, digests,
//! chain heads, key ids, ETags) and reads them back.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    // Into a buffer of the final size, byte pairs: pushing chars encodes each as UTF-8 and
    // checks the capacity each time (request ids are encoded for every request).
    let mut out = vec![0; bytes.len() * 2];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The bytes of hex `text` (either case); `None` for an odd length or a non-hex digit.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

fn value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_byte_and_decodes_it_back() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(text.len(), 512);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff"));
        assert_eq!(decode(&text).unwrap(), all);
        assert_eq!(decode("ABcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn refuses_what_is_not_hex() {
        for bad in ["0", "abc", "0g", "+1", " 1", "é1"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
