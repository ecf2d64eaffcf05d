//! Policy documents as an operator (or a stolen operator certificate) submits them: parsing,
//! validation and compilation never panic, and a document that compiles routes and decides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::CompiledPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((_, p)) = CompiledPolicy::from_json(s) {
        for host in p.hosts().collect::<Vec<_>>() {
            let h = host.trim_start_matches("*.");
            let _ = p.route_request(h, "/");
            let _ = p.route_request(h, "/ADMIN/x");
        }
        let _ = p.longest_session_lifetime();
    }
});
