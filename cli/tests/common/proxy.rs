//! A loopback TCP proxy per directed peer link, so a test can cut, slow and heal the network
//! between CometBFT nodes without root or network namespaces: node `i` dials node `j` at the
//! proxy `i→j`, which forwards to `j`'s real p2p port while the link is up.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One directed link `from → to`.
pub struct Link {
    /// The dialling node.
    pub from: usize,
    /// The node dialled.
    pub to: usize,
    /// Where `from` dials.
    pub port: u16,
    cut: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    /// Starts forwarding `127.0.0.1:port` to `127.0.0.1:target`.
    pub fn start(from: usize, to: usize, port: u16, target: u16) -> Link {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy {from}->{to} on {port}: {e}"));
        let link = Link {
            from,
            to,
            port,
            cut: Arc::default(),
            delay_ms: Arc::default(),
            open: Arc::default(),
        };
        let (cut, delay, open) = (link.cut.clone(), link.delay_ms.clone(), link.open.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if cut.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                if let (Ok(a), Ok(b)) = (inbound.try_clone(), outbound.try_clone()) {
                    let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                    o.push(a);
                    o.push(b);
                }
                for (src, dst) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ] {
                    let (Ok(src), Ok(dst)) = (src, dst) else {
                        continue;
                    };
                    let delay = delay.clone();
                    std::thread::spawn(move || pump(src, dst, &delay));
                }
            }
        });
        link
    }

    /// Cuts the link: open connections are reset, new ones refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Heals it: the nodes' next dial gets through.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Holds every chunk forwarded on this link for `d` (zero: none).
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

fn pump(mut src: TcpStream, mut dst: TcpStream, delay_ms: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let d = delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            std::thread::sleep(Duration::from_millis(d));
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// Every directed link of `n` nodes, node `i` dialling node `j` at `base + 10 * i + j`.
pub struct Network {
    /// The links.
    pub links: Vec<Link>,
}

impl Network {
    /// Proxies for `n` nodes whose real p2p ports are `p2p[j]`.
    pub fn start(base: u16, p2p: &[u16]) -> Network {
        let n = p2p.len();
        let mut links = Vec::new();
        for i in 0..n {
            for (j, &target) in p2p.iter().enumerate() {
                if i != j {
                    links.push(Link::start(i, j, Self::port(base, i, j), target));
                }
            }
        }
        Network { links }
    }

    /// Where node `i` dials node `j`.
    pub fn port(base: u16, i: usize, j: usize) -> u16 {
        base + 10 * i as u16 + j as u16
    }

    fn both(&self, a: usize, b: usize) -> impl Iterator<Item = &Link> {
        self.links
            .iter()
            .filter(move |l| (l.from, l.to) == (a, b) || (l.from, l.to) == (b, a))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        self.both(a, b).for_each(Link::cut);
    }

    /// Heals both directions between `a` and `b`.
    pub fn heal(&self, a: usize, b: usize) {
        self.both(a, b).for_each(Link::heal);
    }

    /// Cuts every link between a node of `left` and one of `right`.
    pub fn partition(&self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.cut(a, b);
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        self.links.iter().for_each(Link::heal);
    }

    /// Delays every link by `d`.
    pub fn delay_all(&self, d: Duration) {
        self.links.iter().for_each(|l| l.delay(d));
    }
}
