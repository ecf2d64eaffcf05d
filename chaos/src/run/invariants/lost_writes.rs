//! No acknowledged write is lost: every revocation the admin API acknowledged is listed
//! afterwards.

use std::collections::HashSet;

use super::super::Invariant;
use super::super::setup::Bed;

const NAME: &str = "no acknowledged write is lost";

pub(super) async fn check(bed: &Bed, acked: &[String]) -> Invariant {
    // Every page: the admin API caps a page at 1,000.
    match crate::cluster::list_revocations(&bed.admin).await {
        Ok(all) => {
            let listed: HashSet<String> = all.into_iter().map(|r| r.id).collect();
            let lost: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
            Invariant {
                name: NAME,
                ok: lost.is_empty(),
                detail: if lost.is_empty() {
                    format!("{} acknowledged revocations all present", acked.len())
                } else {
                    format!("missing {} of {}: {lost:?}", lost.len(), acked.len())
                },
            }
        }
        Err(e) => Invariant {
            name: NAME,
            ok: false,
            detail: format!("the revocations could not be listed: {e}"),
        },
    }
}
