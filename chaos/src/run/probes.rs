//! What the runner sees from outside: probes of every edge (HTTPS, or HTTP/3 when the
//! scenario says `"probe": "h3"`) with a real session, which
//! tell when a revocation or a policy change is in force there, and record a violation when
//! one is not within the bound or stops being in force.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ENFORCEMENT_BOUND, MARKER_HOST, PROBE_HOST};
use crate::cluster::ops_get_at;
use crate::h3client::H3;

/// Everything the probers share.
pub(super) struct Probe {
    /// One client per edge, resolving the probed names to that edge (edges keep their address
    /// across restarts).
    pub(super) clients: Vec<(reqwest::Client, u16)>,
    /// Edges the runner killed (not answering counts as refusing only for them; a running
    /// edge that does not answer in time has not refused anything).
    pub(super) down: Vec<std::sync::atomic::AtomicBool>,
    pub(super) probes: std::sync::atomic::AtomicU64,
    pub(super) violations: Mutex<Vec<String>>,
    /// Probing over HTTP/3: one QUIC connection per edge, in the edge order.
    pub(super) h3: Option<Vec<H3Probe>>,
}

/// The HTTP/3 connection probes of one edge use, opened on first use and again after a
/// failure (an edge killed and restarted keeps its address).
pub(super) struct H3Probe {
    pub(super) addr: std::net::SocketAddr,
    pub(super) ca: String,
    pub(super) conn: tokio::sync::Mutex<Option<H3>>,
}

impl H3Probe {
    /// GET `/` at `host` with `cookie` and `accept`; (status, body), `None` without an answer.
    async fn get(&self, host: &str, cookie: Option<&str>) -> Option<(u16, String)> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let c = tokio::time::timeout(
                Duration::from_secs(2),
                H3::connect(&self.ca, self.addr, host, None),
            )
            .await
            .ok()?
            .ok()?;
            *conn = Some(c);
        }
        let c = conn.as_mut()?;
        let mut req = http::Request::get(format!("https://{host}:{}/", self.addr.port()))
            .header("accept", "text/html");
        if let Some(cookie) = cookie {
            req = req.header("cookie", format!("__Host-palisade-session={cookie}"));
        }
        let req = req.body(()).ok()?;
        match tokio::time::timeout(Duration::from_secs(2), c.send(req, None)).await {
            Ok(Ok(a)) => Some((a.status, a.body)),
            _ => {
                // a connection that failed once is not trusted again
                *conn = None;
                None
            }
        }
    }
}

impl Probe {
    pub(super) async fn status(
        &self,
        host: &str,
        edge: usize,
        cookie: Option<&str>,
    ) -> Option<u16> {
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(h3) = &self.h3 {
            return h3[edge].get(host, cookie).await.map(|(status, _)| status);
        }
        let (http, port) = &self.clients[edge];
        let mut r = http.get(format!("https://{host}:{port}/"));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("__Host-palisade-session={c}"));
        }
        match r.send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                let _ = resp.bytes().await;
                Some(s)
            }
            Err(_) => None,
        }
    }

    /// The marker rule an edge decides `marker` by (`marker-<n>`: its number), `None` when
    /// the edge does not answer.
    pub(super) async fn marker(&self, edge: usize) -> Option<u64> {
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(h3) = &self.h3 {
            let (_, body) = h3[edge].get(MARKER_HOST, None).await?;
            return marker_number(&body);
        }
        let (http, port) = &self.clients[edge];
        let resp = http
            .get(format!("https://{MARKER_HOST}:{port}/"))
            .header("accept", "text/html")
            .send()
            .await
            .ok()?;
        let body = resp.text().await.ok()?;
        marker_number(&body)
    }

    /// Whether `edge` answered, and whether its answer shows `target` in force.
    pub(super) async fn observe(&self, edge: usize, target: &Target) -> (bool, bool) {
        match target {
            Target::Revoked(cookie) => {
                let s = self.status(PROBE_HOST, edge, Some(cookie)).await;
                (s.is_some(), refused(s))
            }
            Target::Marker(n) => {
                let m = self.marker(edge).await;
                (m.is_some(), m.is_some_and(|m| m >= *n))
            }
        }
    }

    pub(super) fn violation(&self, v: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }

    /// Probes every edge until its answers show `target` in force; returns when each edge did
    /// (the last is the enforcement time), or `None` past the bound. Keeps checking each edge for a
    /// second after: an answer showing `target` not in force is a violation.
    pub(super) async fn until_all(
        self: &Arc<Self>,
        target: Target,
        what: String,
        current: Option<(Arc<std::sync::atomic::AtomicU64>, u64)>,
    ) -> Option<Vec<Instant>> {
        let mut tasks = Vec::new();
        for edge in 0..self.clients.len() {
            let p = self.clone();
            let target = target.clone();
            let what = what.clone();
            let current = current.clone();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let at = loop {
                    let (answered, done) = p.observe(edge, &target).await;
                    let down = p.down[edge].load(std::sync::atomic::Ordering::SeqCst);
                    if (answered || down) && done {
                        break Instant::now();
                    }
                    let superseded = current.as_ref().is_some_and(|(g, mine)| {
                        g.load(std::sync::atomic::Ordering::SeqCst) != *mine
                    });
                    if superseded {
                        return None;
                    }
                    if start.elapsed() > ENFORCEMENT_BOUND {
                        p.violation(format!(
                            "edge {edge}: {what} not enforced within {ENFORCEMENT_BOUND:?}"
                        ));
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                // Once enforced, it stays enforced. A newer policy change carries a higher
                // marker number, so it keeps this one in force: no race with it to exclude.
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    let (answered, done) = p.observe(edge, &target).await;
                    // no answer (the edge is down) serves nothing: not a regression
                    if answered && !done {
                        p.violation(format!("edge {edge}: {what} was enforced, then not"));
                        break;
                    }
                }
                Some(at)
            }));
        }
        let mut each = Vec::with_capacity(tasks.len());
        for t in tasks {
            each.push(t.await.ok().flatten()?);
        }
        Some(each)
    }
}

/// What a measurement waits for.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// The session (this cookie) refused.
    Revoked(String),
    /// The marker application decided by marker rule `n` or a newer one.
    Marker(u64),
}

pub(super) fn refused(s: Option<u16>) -> bool {
    s != Some(200)
}

/// The number of the marker rule a denial page names (`marker-<n>`).
pub(super) fn marker_number(body: &str) -> Option<u64> {
    let at = body.find("marker-")? + "marker-".len();
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub(super) async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    ops_get_at(addr, "/metrics").await
}
