//! Local input: files, durations, `provider/subject` users and label selectors. Problems here
//! are usage errors (exit code 2) found before anything is sent.

use std::path::Path;

use palisade_proto::v1 as pb;

use crate::report::Failure;

/// A usage or local configuration error.
pub(crate) fn local(msg: impl Into<String>) -> Failure {
    Failure::new(2, msg)
}

pub(crate) fn read_file(p: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(p).map_err(|e| local(format!("reading {}: {e}", p.display())))
}

/// Writes a file only its owner can read (a key, a token), atomically: a reader sees the old
/// file or the new one, never a part.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| local(format!("writing {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// `30s`, `12h`, ... as a wire duration.
pub(crate) fn duration(s: &str) -> Result<prost_types::Duration, Failure> {
    let d = palisade_policy::duration::parse_duration(s).map_err(local)?;
    Ok(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: 0,
    })
}

/// `provider/subject` → (provider, subject).
pub(crate) fn user(s: &str) -> Result<(String, String), Failure> {
    s.split_once('/')
        .map(|(p, u)| (p.to_string(), u.to_string()))
        .filter(|(p, u)| !p.is_empty() && !u.is_empty())
        .ok_or_else(|| local(format!("{s:?} is not provider/subject")))
}

/// `key=value` labels → a selector.
pub(crate) fn selector(labels: &[String]) -> Result<pb::LabelSelector, Failure> {
    let mut sel = pb::LabelSelector::default();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| local(format!("{l:?} is not key=value")))?;
        sel.match_labels.insert(k.to_string(), v.to_string());
    }
    Ok(sel)
}

/// The first page of `size` entries.
pub(crate) fn first_page(size: u32) -> Option<pb::PageRequest> {
    Some(pb::PageRequest {
        page_size: size,
        page_token: String::new(),
    })
}
