//! What a command produces and the one place that prints it: human text or JSON (`-o json`),
//! and failures with their exit codes (see the crate documentation).

use std::process::ExitCode;

use clap::ValueEnum;
use palisade_link::admin::validation_failure;
use palisade_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::{Code, Status};

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Human,
    Json,
}

/// A command's result, in both forms.
pub(crate) struct Report {
    /// For people: complete lines.
    pub text: String,
    /// For scripts.
    pub value: Value,
}

impl Report {
    pub fn new(text: impl Into<String>, value: Value) -> Self {
        Self {
            text: text.into(),
            value,
        }
    }

    /// A table for people (columns padded to their widest cell, a header line) and an array of
    /// objects for scripts. `columns` are (header, JSON key) pairs; each row is an object.
    pub fn table(columns: &[(&str, &str)], rows: Vec<Value>) -> Self {
        let cell = |row: &Value, key: &str| match &row[key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let widths: Vec<usize> = columns
            .iter()
            .map(|(header, key)| {
                rows.iter()
                    .map(|r| cell(r, key).chars().count())
                    .chain([header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<w$}  "));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        let mut text = line(columns.iter().map(|(h, _)| h.to_string()).collect());
        for r in &rows {
            text.push_str(&line(columns.iter().map(|(_, k)| cell(r, k)).collect()));
        }
        Self::new(text, Value::Array(rows))
    }
}

/// Why a command failed, and its exit code.
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
    pub details: Vec<String>,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// The exit code and message for an admin API error; a rejected document lists its problems.
pub(crate) fn from_status(s: Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => 3,
        Code::NotFound => 4,
        Code::Unauthenticated | Code::PermissionDenied => 5,
        Code::Unavailable | Code::DeadlineExceeded => 6,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => 7,
        _ => 1,
    };
    if let Some(f) = validation_failure(&s).filter(|f| !f.violations.is_empty()) {
        return invalid_document(&f.violations);
    }
    Failure::new(code, s.message())
}

/// A policy document that did not validate: nothing was written.
pub(crate) fn invalid_document(violations: &[pb::FieldViolation]) -> Failure {
    Failure {
        details: violations
            .iter()
            .map(|v| format!("{}: {}", v.path, v.reason))
            .collect(),
        ..Failure::new(
            3,
            format!("the policy document has {} problem(s)", violations.len()),
        )
    }
}

/// A wire timestamp as RFC 3339, empty when absent.
pub(crate) fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The name of a wire enum value without its prefix, lower case (`DEVICE_STATE_WIPED` → `wiped`).
pub(crate) fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

/// Prints the result in the chosen format; returns the exit code.
pub(crate) fn render(output: Output, result: Result<Report, Failure>) -> ExitCode {
    match (result, output) {
        (Ok(r), Output::Human) => {
            print!("{}", r.text);
            ExitCode::SUCCESS
        }
        (Ok(r), Output::Json) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&r.value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        (Err(f), Output::Human) => {
            eprintln!("error: {}", f.message);
            for d in &f.details {
                eprintln!("  {d}");
            }
            ExitCode::from(f.code)
        }
        (Err(f), Output::Json) => {
            println!(
                "{}",
                json!({"error": f.message, "details": f.details, "exit_code": f.code})
            );
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_columns_for_people_and_keeps_the_rows_for_scripts() {
        let rows = vec![
            json!({"id": "d-1", "state": "enrolled", "n": 7}),
            json!({"id": "device-22", "state": null, "n": 10}),
        ];
        let r = Report::table(
            &[("ID", "id"), ("STATE", "state"), ("N", "n")],
            rows.clone(),
        );
        assert_eq!(
            r.text,
            "ID         STATE     N\nd-1        enrolled  7\ndevice-22            10\n"
        );
        assert_eq!(r.value, Value::Array(rows));
    }

    #[test]
    fn admin_api_codes_map_to_exit_codes() {
        for (status, code) in [
            (Status::invalid_argument("x"), 3),
            (Status::not_found("x"), 4),
            (Status::permission_denied("x"), 5),
            (Status::unauthenticated("x"), 5),
            (Status::unavailable("x"), 6),
            (Status::failed_precondition("x"), 7),
            (Status::internal("x"), 1),
        ] {
            assert_eq!(from_status(status).code, code);
        }
    }
}
