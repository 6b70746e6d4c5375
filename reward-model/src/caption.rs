//! One spelling of a caption everywhere: the annotator keys labels by it and the reward
//! models look captions up by it.
//!
//! Rules: control characters become spaces, runs of whitespace collapse to one space, the
//! ends are trimmed, and the result is cut to 256 bytes (on a character boundary), NetHack's
//! message size. An empty result is no caption.

pub const MAX_CAPTION_BYTES: usize = 256;

pub fn normalise(caption: &str) -> Option<String> {
    let mut out = String::with_capacity(caption.len());
    for word in caption.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.len() > MAX_CAPTION_BYTES {
        let mut end = MAX_CAPTION_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.truncate(out.trim_end().len());
    }
    (!out.is_empty()).then_some(out)
}

/// The CNN's input: the caption's bytes, zero-padded to 256.
pub fn bytes(caption: &str) -> [u8; MAX_CAPTION_BYTES] {
    let mut out = [0u8; MAX_CAPTION_BYTES];
    let b = caption.as_bytes();
    let n = b.len().min(MAX_CAPTION_BYTES);
    out[..n].copy_from_slice(&b[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_rules() {
        assert_eq!(normalise("  You see\there a\n brass key.  ").as_deref(), Some("You see here a brass key."));
        assert_eq!(normalise("a\u{0}b\u{7}c").as_deref(), Some("a b c"));
        assert_eq!(normalise(" \t\n"), None);
        assert_eq!(normalise(""), None);
        let long = "é".repeat(300);
        let n = normalise(&long).unwrap();
        assert!(n.len() <= MAX_CAPTION_BYTES && n.chars().all(|c| c == 'é'));
        assert_eq!(&bytes("ab")[..3], &[b'a', b'b', 0]);
    }
}
