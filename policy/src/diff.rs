//! Structural and line diffs between two policy documents, for `palisadectl diff` and the
//! history view.

use std::collections::BTreeMap;

use crate::document::PolicyDocument;

/// Above this many lines per side, the unified diff is left out (the structural diff stays).
pub const MAX_DIFF_LINES: usize = 20_000;

/// What changed between two documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentDiff {
    /// Applications only in the new document.
    pub added_applications: Vec<String>,
    /// Applications only in the old document.
    pub removed_applications: Vec<String>,
    /// Applications in both but different.
    pub changed_applications: Vec<String>,
    /// Identity providers added, removed or changed.
    pub changed_identity_providers: Vec<String>,
    /// A unified diff of the pretty-printed documents (empty when identical or too large).
    pub unified: String,
}

impl DocumentDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added_applications.is_empty()
            && self.removed_applications.is_empty()
            && self.changed_applications.is_empty()
            && self.changed_identity_providers.is_empty()
    }
}

/// Diffs two parsed documents. `old` is `None` for the first version.
pub fn diff(old: Option<&PolicyDocument>, new: &PolicyDocument) -> DocumentDiff {
    let old_apps: BTreeMap<&str, String> = old
        .map(|d| {
            d.apps
                .iter()
                .map(|a| (a.id.as_str(), serde_json::to_string(a).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let new_apps: BTreeMap<&str, String> = new
        .apps
        .iter()
        .map(|a| (a.id.as_str(), serde_json::to_string(a).unwrap_or_default()))
        .collect();
    let mut out = DocumentDiff::default();
    for (id, json) in &new_apps {
        match old_apps.get(id) {
            None => out.added_applications.push(id.to_string()),
            Some(o) if o != json => out.changed_applications.push(id.to_string()),
            _ => {}
        }
    }
    out.removed_applications = old_apps
        .keys()
        .filter(|id| !new_apps.contains_key(*id))
        .map(|s| s.to_string())
        .collect();
    let old_idps: BTreeMap<&str, String> = old
        .map(|d| {
            d.identity_providers
                .iter()
                .map(|p| (p.id.as_str(), serde_json::to_string(p).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let new_idps: BTreeMap<&str, String> = new
        .identity_providers
        .iter()
        .map(|p| (p.id.as_str(), serde_json::to_string(p).unwrap_or_default()))
        .collect();
    let mut idps: Vec<String> = new_idps
        .iter()
        .filter(|(id, j)| old_idps.get(*id) != Some(j))
        .map(|(id, _)| id.to_string())
        .collect();
    idps.extend(
        old_idps
            .keys()
            .filter(|id| !new_idps.contains_key(*id))
            .map(|s| s.to_string()),
    );
    out.changed_identity_providers = idps;
    let a = old
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .unwrap_or_default();
    let b = serde_json::to_string_pretty(new).unwrap_or_default();
    out.unified = unified(&a, &b);
    out
}

/// A unified diff (3 lines of context) of two texts, `-` for removed and `+` for added lines.
pub fn unified(a: &str, b: &str) -> String {
    let a: Vec<&str> = if a.is_empty() {
        Vec::new()
    } else {
        a.lines().collect()
    };
    let b: Vec<&str> = b.lines().collect();
    if a == b || a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return String::new();
    }
    // Trim the common prefix and suffix, then LCS on the middle.
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let n = am.len();
    let m = bm.len();
    let mut ops: Vec<(char, &str)> = Vec::new();
    if n.saturating_mul(m) <= 25_000_000 {
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        let idx = |i: usize, j: usize| i * (m + 1) + j;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[idx(i, j)] = if am[i] == bm[j] {
                    lcs[idx(i + 1, j + 1)] + 1
                } else {
                    lcs[idx(i + 1, j)].max(lcs[idx(i, j + 1)])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push((' ', am[i]));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[idx(i + 1, j)] >= lcs[idx(i, j + 1)]) {
                ops.push(('-', am[i]));
                i += 1;
            } else {
                ops.push(('+', bm[j]));
                j += 1;
            }
        }
    } else {
        ops.extend(am.iter().map(|l| ('-', *l)));
        ops.extend(bm.iter().map(|l| ('+', *l)));
    }
    let ctx_before = &a[pre.saturating_sub(3)..pre];
    let ctx_after = &a[a.len() - suf..(a.len() - suf + suf.min(3))];
    let mut out = format!(
        "@@ -{},{} +{},{} @@\n",
        pre + 1 - ctx_before.len().min(pre),
        n + ctx_before.len() + ctx_after.len(),
        pre + 1 - ctx_before.len().min(pre),
        m + ctx_before.len() + ctx_after.len()
    );
    for l in ctx_before {
        out.push_str(&format!(" {l}\n"));
    }
    for (op, l) in ops {
        out.push_str(&format!("{op}{l}\n"));
    }
    for l in ctx_after {
        out.push_str(&format!(" {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_and_unified() {
        let old: PolicyDocument = crate::parse_document(r#"{"schema_version":1,"apps":[{"id":"a","hosts":["a.example.com"],"upstreams":["http://127.0.0.1:1"],"rules":[{"name":"r","decision":"bypass","include":[{"everyone":true}]}]},{"id":"b","hosts":["b.example.com"],"upstreams":["http://127.0.0.1:1"],"rules":[{"name":"r","decision":"bypass","include":[{"everyone":true}]}]}]}"#).expect("old");
        let new: PolicyDocument = crate::parse_document(r#"{"schema_version":1,"apps":[{"id":"a","hosts":["a.example.com"],"upstreams":["http://127.0.0.1:2"],"rules":[{"name":"r","decision":"bypass","include":[{"everyone":true}]}]},{"id":"c","hosts":["c.example.com"],"upstreams":["http://127.0.0.1:1"],"rules":[{"name":"r","decision":"bypass","include":[{"everyone":true}]}]}]}"#).expect("new");
        let d = diff(Some(&old), &new);
        assert_eq!(d.added_applications, vec!["c"]);
        assert_eq!(d.removed_applications, vec!["b"]);
        assert_eq!(d.changed_applications, vec!["a"]);
        assert!(
            d.unified
                .contains("-        \"http://127.0.0.1:1\"\n+        \"http://127.0.0.1:2\""),
            "{}",
            d.unified
        );
        assert!(diff(Some(&new), &new).is_empty());
        assert_eq!(diff(Some(&new), &new).unified, "");
        assert_eq!(diff(None, &new).added_applications, vec!["a", "c"]);
    }
}
