//! Request path normalisation, done once before routing so that `/app/../admin`, `//admin` or
//! `/%61dmin` cannot reach an application while dodging the rule of the one it really names.
//!
//! `;` path parameters are where servers disagree most: Java servlet containers drop
//! `;anything` from each segment and then read `..;` as `..`, so `/admin;x/users` or
//! `/app/..;/admin/users` would be routed as one application and served as another. By default
//! they are refused; `SemicolonParameters::Strip` removes them before routing instead, so the
//! upstream receives exactly the path that was decided.

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path.
    #[error("path must start with /")]
    NotAbsolute,
    /// A percent escape that is not two hex digits.
    #[error("malformed percent escape")]
    BadEscape,
    /// An encoded slash, backslash, NUL or control character, which different servers read
    /// differently.
    #[error("path contains an ambiguous encoded character")]
    Ambiguous,
    /// Dot segments that climb above the root.
    #[error("path climbs above the root")]
    AboveRoot,
    /// A `;` path parameter (or an encoded `;`), which servers read differently.
    #[error("path contains ';' parameters, which this deployment refuses")]
    Semicolon,
}

pub use crate::document::SemicolonParameters;

/// Normalises the path part of a request target (no query): decodes percent escapes of
/// unreserved characters, resolves `.` and `..` segments (RFC 3986 5.2.4), and merges repeated
/// slashes. Encoded `/`, `\`, NUL and control characters are refused rather than guessed at,
/// and so are `;` path parameters.
pub fn normalize(path: &str) -> Result<String, PathError> {
    normalize_with(path, SemicolonParameters::Refuse)
}

/// `normalize`, with `;` path parameters refused or stripped from every segment (before dot
/// segments are resolved, as servlet containers do). An encoded `;` is refused either way.
pub fn normalize_with(path: &str, semicolons: SemicolonParameters) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    if decoded.contains("%3B") {
        return Err(PathError::Semicolon);
    }
    let stripped;
    let decoded = if decoded.contains(';') {
        match semicolons {
            SemicolonParameters::Refuse => return Err(PathError::Semicolon),
            SemicolonParameters::Strip => {
                stripped = decoded
                    .split('/')
                    .map(|seg| seg.split(';').next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("/");
                &stripped
            }
        }
    } else {
        &decoded
    };
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty()
        || (decoded.ends_with('/') && !out.is_empty())
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
    {
        s.push('/');
    }
    Ok(s)
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: u8| (x as char).to_digit(16);
            let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| hex(*x)),
                b.get(i + 2).and_then(|x| hex(*x)),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = (h * 16 + l) as u8;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else if v == b'/' || v == b'\\' || v < 0x20 || v == 0x7f {
                return Err(PathError::Ambiguous);
            } else {
                // Keep other escapes as they are (uppercased), they do not change routing.
                out.push('%');
                out.push(char::from(b[i + 1]).to_ascii_uppercase());
                out.push(char::from(b[i + 2]).to_ascii_uppercase());
            }
            i += 3;
        } else if c == b'\\' || c < 0x20 || c == 0x7f {
            return Err(PathError::Ambiguous);
        } else {
            // Multi-byte UTF-8 sequences are copied byte-wise via the char boundary below.
            let ch_len = utf8_len(c);
            let end = (i + ch_len).min(b.len());
            out.push_str(path.get(i..end).ok_or(PathError::Ambiguous)?);
            i = end;
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dots_slashes_and_escapes() {
        assert_eq!(normalize("/app/../admin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("//admin///x").as_deref(), Ok("/admin/x"));
        assert_eq!(normalize("/%61dmin/%2e%2e/x").as_deref(), Ok("/x"));
        assert_eq!(normalize("/a/./b/").as_deref(), Ok("/a/b/"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert_eq!(normalize("/a/..").as_deref(), Ok("/"));
        assert_eq!(normalize("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normalize("/café").as_deref(), Ok("/café"));
    }

    #[test]
    fn refuses_ambiguity() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::Ambiguous));
        assert_eq!(normalize("/a%5cb"), Err(PathError::Ambiguous));
        assert_eq!(normalize("/a\\b"), Err(PathError::Ambiguous));
        assert_eq!(normalize("/a%00"), Err(PathError::Ambiguous));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/../etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn semicolon_parameters_are_refused_or_stripped() {
        for p in [
            "/admin;x/users",
            "/app/..;/admin",
            "/a/.;/b",
            "/a;",
            "/a%3bb",
            "/a%3Bb",
        ] {
            assert_eq!(normalize(p), Err(PathError::Semicolon), "{p}");
        }
        let strip = |p| normalize_with(p, SemicolonParameters::Strip);
        assert_eq!(strip("/admin;x/users").as_deref(), Ok("/admin/users"));
        assert_eq!(strip("/app/..;/admin/users").as_deref(), Ok("/admin/users"));
        assert_eq!(strip("/a;jsessionid=1").as_deref(), Ok("/a"));
        assert_eq!(strip("/a%3Bb"), Err(PathError::Semicolon));
        assert_eq!(strip("/;x/..;/..;/etc"), Err(PathError::AboveRoot));
    }
}
