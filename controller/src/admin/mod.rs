//! The admin API: thin gRPC layers over the controller core. Every call authenticates the
//! client certificate and checks its role first; every write is recorded with its actor; input
//! is validated completely before anything is proposed, so a bad request changes nothing.

//!
//! One `Admin` serves every service; each service's `impl` lives in its own module, with the
//! helpers only it uses. What several share (paging, document errors, durations, one-time
//! tokens) is here.

mod audit;
mod cluster;
mod device;
mod factor;
mod key;
mod policy;
mod revocation;

use std::time::Duration;

use base64::Engine;
use palisade_proto::v1 as pb;
use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::controller::Controller;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Every admin service, sharing one controller.
#[derive(Debug, Clone)]
pub struct Admin {
    ctl: Controller,
}

impl Admin {
    /// The admin API of `ctl`.
    pub fn new(ctl: Controller) -> Self {
        Self { ctl }
    }
}

fn paginate<T>(
    items: Vec<T>,
    page: Option<pb::PageRequest>,
) -> Result<(Vec<T>, pb::PageResponse), Status> {
    let page = page.unwrap_or_default();
    let size = match page.page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let offset: usize = if page.page_token.is_empty() {
        0
    } else {
        page.page_token
            .parse()
            .map_err(|_| Status::invalid_argument("page_token is not one this server issued"))?
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = if offset + out.len() < total {
        (offset + out.len()).to_string()
    } else {
        String::new()
    };
    Ok((
        out,
        pb::PageResponse {
            next_page_token: next,
        },
    ))
}

fn invalid_document(violations: &[palisade_policy::Violation]) -> Status {
    let failure = pb::ValidationFailure {
        violations: violations
            .iter()
            .map(|v| pb::FieldViolation {
                path: v.path.clone(),
                reason: v.reason.clone(),
            })
            .collect(),
    };
    let summary = violations
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    Status::with_details(
        Code::InvalidArgument,
        format!(
            "the policy document has {} problem(s):\n{summary}",
            violations.len()
        ),
        failure.encode_to_vec().into(),
    )
}

fn duration(d: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Status::invalid_argument("durations must not be negative"))
        }
        Some(d) if d.seconds == 0 && d.nanos == 0 => Ok(None),
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn required(s: &str, what: &str) -> Result<(), Status> {
    if s.trim().is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(())
    }
}
