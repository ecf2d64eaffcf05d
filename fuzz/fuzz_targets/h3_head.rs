//! The start of HTTP/3 request streams, through the edge's own frame and QPACK reading
//! (`node::h3::head`), which runs before h3 sees a request: never a panic, and reading the
//! bytes in two pieces (resuming where the first read stopped) comes to the same answer as
//! reading them at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_node::h3::head::{Scan, fields, scan};

/// Small, so that the limit is reached often.
const LIMIT: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = scan(bytes, 0, LIMIT);
    let cut = usize::from(cut).min(bytes.len());
    let resumed = match scan(&bytes[..cut], 0, LIMIT) {
        Scan::More { from } => {
            assert!(from <= cut);
            scan(bytes, from, LIMIT)
        }
        // what is decided on a prefix stays decided
        decided => decided,
    };
    assert_eq!(whole, resumed);
    if let Scan::Headers { len, .. } = whole {
        assert!(len <= bytes.len() && len <= LIMIT);
    }
    let _ = fields(bytes);
});
