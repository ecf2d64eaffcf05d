//! A user-space fault proxy for TCP links (there is no `tc netem` on these machines).
//!
//! One proxy stands in front of each controller: the other controllers, the edges and the
//! forwarded writes reach the controller through it (the controller advertises the proxy's
//! address), so a fault set on it hits every link into that controller. Faults:
//!
//! - **delay** and **jitter**: every chunk read is released `delay + U(0, jitter)` after it
//!   arrived, in order (a chunk never overtakes the one before it, as on a real link); the pipe
//!   keeps streaming meanwhile, so throughput is not divided by the delay;
//! - **loss**: TCP hides loss behind retransmission, so a lost segment shows up as a hole the
//!   receiver waits on; each chunk is "lost" with probability `loss` and released one
//!   retransmission timeout (`LOSS_RTO`) late, holding back everything behind it;
//! - **stall**: nothing is read or written while stalled (connections stay open, windows fill):
//!   a grey failure, not a crash;
//! - **blocked**: new connections are refused and open ones cut (a hard partition of the
//!   controller's inbound links).
//!
//! Changing the faults applies to data already in flight from then on and to new connections.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// How late a "lost" chunk arrives: Linux's minimum retransmission timeout.
pub const LOSS_RTO: Duration = Duration::from_millis(200);

/// What the proxy does to the bytes it forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Added to every chunk.
    pub delay: Duration,
    /// Up to this much more, uniformly.
    pub jitter: Duration,
    /// Probability that a chunk is lost (and retransmitted `LOSS_RTO` later).
    pub loss: f64,
    /// Hold everything while set.
    pub stalled: bool,
    /// Refuse and cut connections while set.
    pub blocked: bool,
}

impl Faults {
    /// No fault.
    pub fn none() -> Faults {
        Faults::default()
    }
}

/// A running proxy; dropped, it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct FaultProxy {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where it forwards.
    pub target: SocketAddr,
    faults: watch::Sender<Faults>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on `listen` (port 0 for any) forwarding to `target`. `seed` makes the
    /// loss and jitter draws repeatable per connection order.
    pub async fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (tx, rx) = watch::channel(Faults::none());
        let accept = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                n += 1;
                if rx.borrow().blocked {
                    drop(client);
                    continue;
                }
                let rx = rx.clone();
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(n);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pipe(cr, sw, rx.clone(), seed);
                    let down = pipe(sr, cw, rx, seed ^ 0x5eed);
                    // when either direction ends, both end
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Ok(FaultProxy {
            listen,
            target,
            faults: tx,
            accept,
        })
    }

    /// Sets the faults (replacing the previous ones).
    pub fn set(&self, f: Faults) {
        let _ = self.faults.send(f);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }
}

/// Forwards one direction: a reader that timestamps chunks and a writer that releases them.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    seed: u64,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let mut wf = faults.clone();
    let reader = async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut last_release = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // while stalled, read nothing (the sender's window fills, as on a stuck link)
            loop {
                let f = *faults.borrow_and_update();
                if f.blocked {
                    return;
                }
                if !f.stalled {
                    break;
                }
                if faults.changed().await.is_err() {
                    return;
                }
            }
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // a fault change while waiting for data is re-read at the top of the loop
                c = faults.changed() => {
                    if c.is_err() { return; }
                    continue;
                }
            };
            let f = *faults.borrow();
            let mut d = f.delay;
            if !f.jitter.is_zero() {
                d += f.jitter.mul_f64(rng.random_range(0.0..1.0));
            }
            if f.loss > 0.0 && rng.random_bool(f.loss.clamp(0.0, 1.0)) {
                d += LOSS_RTO;
            }
            let release = (Instant::now() + d).max(last_release);
            last_release = release;
            if tx.send((release, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            loop {
                let f = *wf.borrow_and_update();
                if f.blocked {
                    return;
                }
                if !f.stalled {
                    break;
                }
                if wf.changed().await.is_err() {
                    return;
                }
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        a
    }

    async fn round_trip(addr: SocketAddr) -> Option<Duration> {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
            .await
            .ok()?
            .ok()?;
        Some(t.elapsed())
    }

    #[tokio::test]
    async fn delay_stall_and_block() {
        let target = echo().await;
        let p = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), target, 1)
            .await
            .expect("proxy");
        let clean = round_trip(p.listen).await.expect("clean");
        assert!(clean < Duration::from_millis(50), "{clean:?}");
        p.set(Faults {
            delay: Duration::from_millis(40),
            ..Faults::none()
        });
        let slow = round_trip(p.listen).await.expect("delayed");
        // both directions are delayed
        assert!(slow >= Duration::from_millis(80), "{slow:?}");
        p.set(Faults {
            stalled: true,
            ..Faults::none()
        });
        assert_eq!(round_trip(p.listen).await, None, "stalled");
        p.set(Faults {
            blocked: true,
            ..Faults::none()
        });
        assert_eq!(round_trip(p.listen).await, None, "blocked");
        p.set(Faults::none());
        assert!(round_trip(p.listen).await.is_some(), "healed");
    }

    #[tokio::test]
    async fn loss_delays_by_a_retransmission_timeout() {
        let target = echo().await;
        let p = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), target, 7)
            .await
            .expect("proxy");
        p.set(Faults {
            loss: 1.0,
            ..Faults::none()
        });
        let t = round_trip(p.listen).await.expect("arrives late");
        assert!(t >= LOSS_RTO * 2, "{t:?}");
    }
}
