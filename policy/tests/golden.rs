//! Golden tests over the documents in `docs/`: the examples validate, each invalid document
//! yields exactly its expected error list, and the published JSON Schema is the one the code
//! generates. Run with `PALISADE_BLESS=1` to rewrite the expected files after a deliberate change.

use std::path::{Path, PathBuf};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn bless() -> bool {
    std::env::var_os("PALISADE_BLESS").is_some()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn examples_validate() {
    let examples = files(&docs().join("examples"), "json");
    assert!(examples.len() >= 3, "expected at least three examples");
    for path in examples {
        let json = std::fs::read_to_string(&path).expect("read example");
        let violations = palisade_policy::validate_json(&json);
        assert!(
            violations.is_empty(),
            "{} should validate, got:\n{}",
            path.display(),
            violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn invalid_examples_fail_with_their_expected_errors() {
    let dir = docs().join("examples/invalid");
    let invalid = files(&dir, "json");
    assert!(invalid.len() >= 5);
    let mut mismatches = Vec::new();
    for path in invalid {
        let json = std::fs::read_to_string(&path).expect("read");
        let got: Vec<String> = palisade_policy::validate_json(&json)
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert!(!got.is_empty(), "{} should fail validation", path.display());
        let expected_path = path.with_extension("errors");
        let got_text = got.join("\n") + "\n";
        if bless() {
            std::fs::write(&expected_path, &got_text).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "missing {} (run with PALISADE_BLESS=1)",
                expected_path.display()
            )
        });
        if expected != got_text {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got_text}",
                path.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn published_schema_is_current() {
    let generated =
        serde_json::to_string_pretty(&palisade_policy::json_schema()).expect("schema json") + "\n";
    let path = docs().join("policy.schema.json");
    if bless() {
        std::fs::write(&path, &generated).expect("bless schema");
        return;
    }
    let published = std::fs::read_to_string(&path).expect("docs/policy.schema.json exists");
    assert!(
        published == generated,
        "docs/policy.schema.json is out of date; run `PALISADE_BLESS=1 cargo test -p palisade-policy --test golden`"
    );
}

#[test]
fn schema_rejects_unknown_fields_for_editors() {
    let schema = palisade_policy::json_schema();
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let app = &schema["$defs"]["Application"];
    assert_eq!(
        app["additionalProperties"],
        serde_json::Value::Bool(false),
        "{app}"
    );
}

#[test]
fn documents_round_trip_through_serialization() {
    for path in files(&docs().join("examples"), "json") {
        let json = std::fs::read_to_string(&path).expect("read");
        let doc = palisade_policy::parse_document(&json).expect("parses");
        let again = serde_json::to_string(&doc).expect("serializes");
        let back = palisade_policy::parse_document(&again).expect("re-parses");
        assert_eq!(doc, back, "{}", path.display());
    }
}
