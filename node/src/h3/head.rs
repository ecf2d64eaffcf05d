//! The head of an HTTP/3 request stream, read before h3 decodes it, for the rules of RFC 9114
//! 4.3 that h3 0.0.8 does not keep: it takes a repeated `:path` as its last value, and a
//! `:status` in a request without complaint. Such a request is malformed, and the edge refuses
//! it rather than deciding on one reading of it. The same check refuses a pseudo-header after
//! a regular field and an uppercase field name, which h3 refuses too: one place says why.
//!
//! This is a pure function of the bytes received so far: no stream, no state. It decodes just
//! enough of the frames (RFC 9114 7.1) and of QPACK (RFC 9204 4.5) to know each field's name:
//! static-table names, literal names (plain or Huffman-coded), and the lengths of everything
//! else. Values are skipped, never decoded. What it cannot read it leaves to h3, which refuses
//! it: a dynamic-table reference (the edge's QPACK table has no capacity, so none is ever
//! valid), a broken integer or string, a name with a symbol no field name may hold.
//!
//! It must never accept more than h3 does; it only adds refusals.

use std::fmt;

/// What the bytes at the start of a request stream say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The first HEADERS frame is not complete yet; the frames before `from` are read (scan
    /// again from there).
    More {
        /// Where the first frame not read yet begins.
        from: usize,
    },
    /// The first HEADERS frame, complete, ends `len` bytes in; its field section checked.
    Headers {
        /// Bytes up to the end of the frame.
        len: usize,
        /// Whether the field section keeps RFC 9114 4.3.
        verdict: Result<(), Malformed>,
    },
    /// The first frame that matters is not HEADERS (or cannot be read): h3's to refuse.
    NotHeaders,
    /// The HEADERS frame, or the frames before it, are longer than `limit`.
    TooLong,
}

/// A request h3 would take but RFC 9114 4.3 calls malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A pseudo-header field appears more than once.
    Repeated(Pseudo),
    /// A pseudo-header field follows a regular field.
    Late(Pseudo),
    /// A pseudo-header field defined for responses, or not defined at all.
    NotForRequests,
    /// A field name holds an uppercase letter.
    Uppercase,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repeated(p) => write!(f, "the pseudo-header {} appears twice", p.name()),
            Self::Late(p) => write!(f, "the pseudo-header {} follows a regular field", p.name()),
            Self::NotForRequests => f.write_str("a pseudo-header no request may carry"),
            Self::Uppercase => f.write_str("an uppercase field name"),
        }
    }
}

/// The request pseudo-header fields (RFC 9114 4.3.1, and `:protocol` from RFC 9220).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    Protocol,
}

impl Pseudo {
    const ALL: [Pseudo; 5] = [
        Self::Method,
        Self::Scheme,
        Self::Authority,
        Self::Path,
        Self::Protocol,
    ];

    /// The field name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Method => ":method",
            Self::Scheme => ":scheme",
            Self::Authority => ":authority",
            Self::Path => ":path",
            Self::Protocol => ":protocol",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// HTTP/3 frame types that are not extensions (RFC 9114 7.2, and HTTP/2's reserved ones), and
/// WebTransport's stream signal: anything else is an unknown frame, which may come before
/// HEADERS and must be ignored (RFC 9114 7.2.8).
fn known_frame(ty: u64) -> bool {
    matches!(ty, 0x0..=0x9 | 0xd | 0x41)
}

const HEADERS: u64 = 0x1;

/// Scans the start of a request stream from `from` (0, or what [`Scan::More`] said): unknown
/// frames skipped, then the first HEADERS frame checked once it is all there. `limit` bounds
/// the bytes this waits for.
pub fn scan(buf: &[u8], from: usize, limit: usize) -> Scan {
    let mut at = from.min(buf.len());
    loop {
        let mut rest = &buf[at..];
        let before = rest.len();
        let (Some(ty), Some(len)) = (varint(&mut rest), varint(&mut rest)) else {
            return if buf.len() > limit {
                Scan::TooLong
            } else {
                Scan::More { from: at }
            };
        };
        let start = at + (before - rest.len());
        if ty != HEADERS && known_frame(ty) {
            return Scan::NotHeaders;
        }
        let end = match usize::try_from(len).ok().and_then(|l| start.checked_add(l)) {
            Some(end) if end <= limit => end,
            _ => return Scan::TooLong,
        };
        if buf.len() < end {
            return Scan::More { from: at };
        }
        if ty == HEADERS {
            return match fields(&buf[start..end]) {
                Some(verdict) => Scan::Headers { len: end, verdict },
                None => Scan::NotHeaders,
            };
        }
        at = end;
    }
}

/// The verdict on one encoded field section, or `None` where it cannot be read here.
pub fn fields(mut block: &[u8]) -> Option<Result<(), Malformed>> {
    let b = &mut block;
    // the section prefix: a Required Insert Count above zero needs the dynamic table
    let (_, required) = int(b, 8)?;
    if required != 0 {
        return None;
    }
    int(b, 7)?;
    let mut seen = 0u8;
    let mut regular = false;
    let mut verdict = Ok(());
    while let Some(&first) = b.first() {
        let name = if first & 0x80 != 0 {
            // indexed field line: `1 T index(6)`
            let (_, i) = int(b, 6)?;
            if first & 0x40 == 0 {
                return None;
            }
            static_name(i)?
        } else if first & 0x40 != 0 {
            // literal with name reference: `01 N T index(4)`, then the value
            let (_, i) = int(b, 4)?;
            if first & 0x10 == 0 {
                return None;
            }
            skip_string(b, 7)?;
            static_name(i)?
        } else if first & 0x20 != 0 {
            // literal with literal name: `001 N H length(3)` and the name, then the value
            let name = literal_name(b)?;
            skip_string(b, 7)?;
            name
        } else {
            // post-base references: the dynamic table again
            return None;
        };
        // the first fault is the verdict; the rest is still read, so that a section h3
        // cannot decode stays h3's to refuse
        if verdict.is_ok() {
            verdict = match name {
                Name::Regular { uppercase: true } => Err(Malformed::Uppercase),
                Name::Regular { uppercase: false } => {
                    regular = true;
                    Ok(())
                }
                Name::Response | Name::UnknownPseudo => Err(Malformed::NotForRequests),
                Name::Pseudo(p) if seen & p.bit() != 0 => Err(Malformed::Repeated(p)),
                Name::Pseudo(p) if regular => Err(Malformed::Late(p)),
                Name::Pseudo(p) => {
                    seen |= p.bit();
                    Ok(())
                }
            };
        }
    }
    Some(verdict)
}

/// What a field line's name is, as far as the rules here care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Pseudo(Pseudo),
    /// `:status`.
    Response,
    UnknownPseudo,
    Regular {
        uppercase: bool,
    },
}

impl Name {
    fn of(name: &[u8]) -> Name {
        if name.first() != Some(&b':') {
            return Name::Regular {
                uppercase: name.iter().any(u8::is_ascii_uppercase),
            };
        }
        if name == b":status" {
            return Name::Response;
        }
        Pseudo::ALL
            .into_iter()
            .find(|p| p.name().as_bytes() == name)
            .map_or(Name::UnknownPseudo, Name::Pseudo)
    }
}

/// The name of a static-table entry (RFC 9204 Appendix A); `None` past its 99 entries. Every
/// entry that is not a pseudo-header is a lowercase regular field.
fn static_name(index: u64) -> Option<Name> {
    Some(match index {
        0 => Name::Pseudo(Pseudo::Authority),
        1 => Name::Pseudo(Pseudo::Path),
        15..=21 => Name::Pseudo(Pseudo::Method),
        22 | 23 => Name::Pseudo(Pseudo::Scheme),
        24..=28 | 63..=71 => Name::Response,
        2..=14 | 29..=62 | 72..=98 => Name::Regular { uppercase: false },
        _ => return None,
    })
}

/// A literal name (`001 N H length(3)`, then the bytes), decoded.
fn literal_name(b: &mut &[u8]) -> Option<Name> {
    let huffman = b.first()? & 0x08 != 0;
    let (_, len) = int(b, 3)?;
    let raw = take(b, len)?;
    if huffman {
        Some(Name::of(&huffman_decode(raw)?))
    } else {
        Some(Name::of(raw))
    }
}

/// Skips a string literal whose length has an `n`-bit prefix (the Huffman flag above it).
fn skip_string(b: &mut &[u8], n: u8) -> Option<()> {
    let (_, len) = int(b, n)?;
    take(b, len).map(|_| ())
}

fn take<'a>(b: &mut &'a [u8], len: u64) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if b.len() < len {
        return None;
    }
    let (taken, rest) = b.split_at(len);
    *b = rest;
    Some(taken)
}

/// A QPACK prefixed integer (RFC 7541 5.1) with an `n`-bit prefix: the first byte, and the
/// value. At most 62 bits, as h3 allows.
fn int(b: &mut &[u8], n: u8) -> Option<(u8, u64)> {
    let (&first, rest) = b.split_first()?;
    *b = rest;
    let mask = if n >= 8 { 0xff } else { (1u8 << n) - 1 };
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Some((first, value));
    }
    let mut shift = 0u32;
    loop {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        if shift > 56 {
            return None;
        }
        value = value.checked_add(u64::from(byte & 0x7f) << shift)?;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some((first, value));
        }
    }
}

/// A QUIC variable-length integer (RFC 9000 16).
fn varint(b: &mut &[u8]) -> Option<u64> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &byte in &bytes[1..] {
        v = (v << 8) | u64::from(byte);
    }
    *b = &b[len..];
    Some(v)
}

/// The symbols of RFC 7541 Appendix B's Huffman code up to 15 bits long, by code length, in
/// the order the canonical code assigns them. They include every symbol a field name may
/// hold; the longer codes (19 to 30 bits) are for symbols no field name holds.
const HUFFMAN: [(u32, &[u8]); 10] = [
    (5, b"012aceiost"),
    (6, b" %-./3456789=A_bdfghlmnpru"),
    (7, b":BCDEFGHIJKLMNOPQRSTUVWYjkqvwxyz"),
    (8, b"&*,;XZ"),
    (10, b"!\"()?"),
    (11, b"'+|"),
    (12, b"#>"),
    (13, b"\0$@[]~"),
    (14, b"^}"),
    (15, b"<`{"),
];

/// The symbol of a `len`-bit code, if it is one of [`HUFFMAN`]'s.
fn huffman_symbol(code: u32, len: u32) -> Option<u8> {
    let mut first = 0u32;
    let mut prev = HUFFMAN[0].0;
    for (l, symbols) in HUFFMAN {
        first <<= l - prev;
        prev = l;
        if l == len {
            let i = code.checked_sub(first)?;
            return symbols.get(i as usize).copied();
        }
        first += symbols.len() as u32;
    }
    None
}

/// Decodes a Huffman-coded name; `None` for a symbol outside [`HUFFMAN`] or bad padding (RFC
/// 7541 5.2: fewer than 8 bits, all ones).
fn huffman_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u32);
    for byte in raw {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if let Some(s) = huffman_symbol(code, len) {
                out.push(s);
                (code, len) = (0, 0);
            } else if len >= 15 {
                return None;
            }
        }
    }
    (len < 8 && code == (1 << len) - 1).then_some(out)
}

/// A field section encoder for tests (the checker's opposite), with every representation a
/// peer may choose.
#[cfg(any(test, feature = "test-encoder"))]
pub mod encode {
    use super::HUFFMAN;

    /// How to encode one field line.
    #[derive(Debug, Clone, Copy)]
    pub enum Line {
        /// An indexed static entry.
        Indexed(u64),
        /// A static name reference with a literal value.
        NameRef(u64),
        /// A literal name, plain.
        Literal,
        /// A literal name, Huffman-coded.
        HuffmanName,
    }

    /// Appends a prefixed integer with an `n`-bit prefix, `flags` above it.
    pub fn int(out: &mut Vec<u8>, flags: u8, n: u8, value: u64) {
        let mask = if n >= 8 { 0xffu64 } else { (1u64 << n) - 1 };
        if value < mask {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | mask as u8);
        let mut v = value - mask;
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// The Huffman code of `s`, or `None` if a symbol is not in the checker's table.
    pub fn huffman(s: &[u8]) -> Option<Vec<u8>> {
        let (mut acc, mut bits) = (0u64, 0u32);
        let mut out = Vec::new();
        for &c in s {
            let (code, len) = code_of(c)?;
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        Some(out)
    }

    fn code_of(c: u8) -> Option<(u32, u32)> {
        let mut first = 0u32;
        let mut prev = HUFFMAN[0].0;
        for (l, symbols) in HUFFMAN {
            first <<= l - prev;
            prev = l;
            if let Some(i) = symbols.iter().position(|&s| s == c) {
                return Some((first + i as u32, l));
            }
            first += symbols.len() as u32;
        }
        None
    }

    /// One field line.
    pub fn line(out: &mut Vec<u8>, how: Line, name: &[u8], value: &[u8]) {
        match how {
            Line::Indexed(i) => int(out, 0xc0, 6, i),
            Line::NameRef(i) => {
                int(out, 0x50, 4, i);
                int(out, 0, 7, value.len() as u64);
                out.extend_from_slice(value);
            }
            Line::Literal => {
                int(out, 0x20, 3, name.len() as u64);
                out.extend_from_slice(name);
                int(out, 0, 7, value.len() as u64);
                out.extend_from_slice(value);
            }
            Line::HuffmanName => {
                let coded = huffman(name).expect("a name the table covers");
                int(out, 0x28, 3, coded.len() as u64);
                out.extend_from_slice(&coded);
                let coded = huffman(value).unwrap_or_else(|| value.to_vec());
                int(out, 0x80, 7, coded.len() as u64);
                out.extend_from_slice(&coded);
            }
        }
    }

    /// A field section (no dynamic table) of `lines`.
    pub fn section(lines: &[(Line, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = vec![0, 0];
        for (how, name, value) in lines {
            line(&mut out, *how, name, value);
        }
        out
    }

    /// A frame: type, length, payload.
    pub fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, ty);
        varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    /// A QUIC variable-length integer.
    pub fn varint(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0x3f => out.push(v as u8),
            0x40..=0x3fff => out.extend_from_slice(&(0x4000 | v as u16).to_be_bytes()),
            0x4000..=0x3fff_ffff => out.extend_from_slice(&(0x8000_0000 | v as u32).to_be_bytes()),
            _ => out.extend_from_slice(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests;
