use proptest::prelude::*;

use super::encode::{Line, frame, huffman, section, varint};
use super::*;

const LIMIT: usize = 4096;

fn request(lines: &[(Line, &[u8], &[u8])]) -> Vec<u8> {
    frame(HEADERS, &section(lines))
}

fn good() -> Vec<(Line, &'static [u8], &'static [u8])> {
    vec![
        (Line::Indexed(17), b":method", b"GET"),
        (Line::Indexed(23), b":scheme", b"https"),
        (Line::NameRef(0), b":authority", b"app.example"),
        (Line::NameRef(1), b":path", b"/hello"),
        (Line::Literal, b"x-trace", b"1"),
    ]
}

fn verdict(lines: &[(Line, &[u8], &[u8])]) -> Result<(), Malformed> {
    match scan(&request(lines), 0, LIMIT) {
        Scan::Headers { verdict, .. } => verdict,
        other => panic!("not read: {other:?}"),
    }
}

#[test]
fn huffman_code_matches_rfc_7541_examples() {
    // RFC 7541 C.4.1 to C.4.3
    let cases: [(&[u8], &[u8]); 4] = [
        (
            b"www.example.com",
            &[
                0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
            ],
        ),
        (b"no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
        (
            b"custom-key",
            &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
        ),
        (
            b"custom-value",
            &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
        ),
    ];
    for (plain, coded) in cases {
        assert_eq!(huffman(plain).as_deref(), Some(coded));
        assert_eq!(huffman_decode(coded).as_deref(), Some(plain));
    }
}

#[test]
fn huffman_table_leaves_exactly_the_prefix_of_the_long_codes() {
    // Kraft's sum over the codes up to 15 bits: all but one 15-bit code point are used, and
    // that one (fifteen ones) is where every longer code begins.
    let used: u32 = HUFFMAN
        .iter()
        .map(|(len, s)| s.len() as u32 * (1 << (15 - len)))
        .sum();
    assert_eq!(used, (1 << 15) - 1);
    // every symbol a field name may hold (RFC 9110 5.6.2 tchar) is covered
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" {
        assert!(huffman(&[*c]).is_some(), "{}", *c as char);
    }
}

#[test]
fn huffman_refuses_bad_padding_and_long_codes() {
    // 'a' (00011) then three zero bits: padding must be ones
    assert_eq!(huffman_decode(&[0b0001_1000]), None);
    // 'a' then eight bits of padding
    assert_eq!(huffman_decode(&[0b0001_1111, 0xff]), None);
    // fifteen ones and more: a symbol past the table
    assert_eq!(huffman_decode(&[0xff, 0xff, 0x00]), None);
    assert_eq!(huffman_decode(&[0b0001_1111]).as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_well_formed_request_passes_in_every_representation() {
    assert_eq!(verdict(&good()), Ok(()));
    let huffman_names: Vec<_> = good()
        .into_iter()
        .map(|(_, n, v)| (Line::HuffmanName, n, v))
        .collect();
    assert_eq!(verdict(&huffman_names), Ok(()));
    let literal: Vec<_> = good()
        .into_iter()
        .map(|(_, n, v)| (Line::Literal, n, v))
        .collect();
    assert_eq!(verdict(&literal), Ok(()));
}

#[test]
fn malformed_pseudo_headers_are_named() {
    let mut twice = good();
    twice.push((Line::HuffmanName, b":path", b"/admin"));
    // the repeated :path comes after a regular field, but repetition is the first fault
    assert_eq!(verdict(&twice), Err(Malformed::Repeated(Pseudo::Path)));

    let mut late = good();
    late.insert(0, (Line::Literal, b"x-first", b"1"));
    assert_eq!(verdict(&late), Err(Malformed::Late(Pseudo::Method)));

    let mut status = good();
    status.insert(0, (Line::Indexed(25), b":status", b"200"));
    assert_eq!(verdict(&status), Err(Malformed::NotForRequests));

    let mut unknown = good();
    unknown.insert(0, (Line::Literal, b":tenant", b"a"));
    assert_eq!(verdict(&unknown), Err(Malformed::NotForRequests));

    let mut upper = good();
    upper.push((Line::HuffmanName, b"X-Upper", b"1"));
    assert_eq!(verdict(&upper), Err(Malformed::Uppercase));
    assert_eq!(
        Malformed::Repeated(Pseudo::Path).to_string(),
        "the pseudo-header :path appears twice"
    );
}

#[test]
fn what_only_h3_can_refuse_is_left_to_it() {
    // a Required Insert Count: the dynamic table
    assert_eq!(fields(&[0x01, 0x00, 0xc0 | 17]), None);
    // a dynamic indexed line, a post-base reference
    assert_eq!(fields(&[0, 0, 0x80]), None);
    assert_eq!(fields(&[0, 0, 0x10]), None);
    // past the static table
    assert_eq!(fields(&[0, 0, 0xff, 0x30]), None);
    // a string longer than the section
    assert_eq!(fields(&[0, 0, 0x51, 0x05, b'/']), None);
    // an integer that never ends
    assert_eq!(fields(&[0, 0, 0xff, 0xff, 0xff]), None);
    // a fault before an unreadable line: still h3's
    let mut b = section(&[(Line::Literal, b":tenant", b"a")]);
    b.push(0x80);
    assert_eq!(fields(&b), None);
    // DATA first
    assert_eq!(scan(&frame(0x0, b"hi"), 0, LIMIT), Scan::NotHeaders);
    // HTTP/2's PRIORITY
    assert_eq!(scan(&frame(0x2, b"hi"), 0, LIMIT), Scan::NotHeaders);
}

#[test]
fn unknown_frames_before_headers_are_skipped() {
    let mut stream = frame(0x21, b"grease");
    stream.extend(frame(0x1f * 3 + 0x21, b""));
    let head = request(&good());
    stream.extend(&head);
    let len = stream.len();
    stream.extend(frame(0x0, b"body"));
    assert_eq!(
        scan(&stream, 0, LIMIT),
        Scan::Headers {
            len,
            verdict: Ok(())
        }
    );
    // every shorter prefix waits for more, and scanning on from where it stopped, chunk by
    // chunk, comes to the same answer
    let mut from = 0;
    for cut in 0..len {
        match scan(&stream[..cut], from, LIMIT) {
            Scan::More { from: f } => {
                assert!(f >= from && f <= cut, "cut at {cut}: {f}");
                from = f;
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert!(from > 0, "the grease frames were read before the end");
    assert_eq!(
        scan(&stream, from, LIMIT),
        Scan::Headers {
            len,
            verdict: Ok(())
        }
    );
}

#[test]
fn a_head_longer_than_the_limit_is_refused_before_it_arrives() {
    let mut claim = Vec::new();
    varint(&mut claim, HEADERS);
    varint(&mut claim, 1 << 30);
    assert_eq!(scan(&claim, 0, LIMIT), Scan::TooLong);
    // unknown frames count too
    let mut grease = Vec::new();
    varint(&mut grease, 0x21);
    varint(&mut grease, LIMIT as u64);
    assert_eq!(scan(&grease, 0, LIMIT), Scan::TooLong);
    // a frame header that never ends, past the limit
    assert_eq!(scan(&[0x40; LIMIT + 1][..], 0, LIMIT), Scan::TooLong);
}

/// One field of a generated request, and how it is encoded.
#[derive(Debug, Clone)]
struct Field {
    name: &'static [u8],
    how: Line,
}

fn field() -> impl Strategy<Value = Field> {
    // (name, static index of the name, an indexed entry with that name)
    let names: [(&[u8], Option<u64>, Option<u64>); 10] = [
        (b":method", Some(15), Some(17)),
        (b":scheme", Some(22), Some(23)),
        (b":authority", Some(0), None),
        (b":path", Some(1), Some(1)),
        (b":protocol", None, None),
        (b":status", Some(24), Some(25)),
        (b":tenant", None, None),
        (b"accept", Some(29), Some(29)),
        (b"x-trace", None, None),
        (b"X-Trace", None, None),
    ];
    (0..names.len(), 0..4u8).prop_map(move |(i, how)| {
        let (name, by_name, indexed) = names[i];
        let how = match (how, by_name, indexed) {
            (0, _, Some(e)) => Line::Indexed(e),
            (1, Some(n), _) => Line::NameRef(n),
            (2, ..) => Line::Literal,
            _ => Line::HuffmanName,
        };
        Field { name, how }
    })
}

/// RFC 9114 4.3 applied to the plain list of names.
fn oracle(fields: &[Field]) -> Result<(), Malformed> {
    let mut seen = Vec::new();
    let mut regular = false;
    for f in fields {
        let name = f.name;
        if name[0] != b':' {
            if name.iter().any(u8::is_ascii_uppercase) {
                return Err(Malformed::Uppercase);
            }
            regular = true;
            continue;
        }
        let Some(p) = Pseudo::ALL
            .into_iter()
            .find(|p| p.name().as_bytes() == name)
        else {
            return Err(Malformed::NotForRequests);
        };
        if seen.contains(&p) {
            return Err(Malformed::Repeated(p));
        }
        if regular {
            return Err(Malformed::Late(p));
        }
        seen.push(p);
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_checker_agrees_with_the_rules_in_every_encoding(
        fields in prop::collection::vec(field(), 0..12),
        grease in prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
    ) {
        let lines: Vec<(Line, &[u8], &[u8])> =
            fields.iter().map(|f| (f.how, f.name, &b"v/1"[..])).collect();
        let mut stream = grease.map(|g| frame(0x21, &g)).unwrap_or_default();
        stream.extend(request(&lines));
        match scan(&stream, 0, LIMIT) {
            Scan::Headers { len, verdict } => {
                prop_assert_eq!(len, stream.len());
                prop_assert_eq!(verdict, oracle(&fields));
            }
            other => prop_assert!(false, "not read: {:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = scan(&bytes, 0, 256);
        let _ = fields(&bytes);
        let _ = huffman_decode(&bytes);
    }
}
