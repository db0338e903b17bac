//! A round-robin TCP proxy on loopback, the tests' stand-in for Nginx's `upstream`: each new
//! connection goes to the next backend; a backend that refuses the connection (killed) is
//! skipped for the next one, as Nginx does. The tests' requests use one connection each, so
//! consecutive requests land on consecutive instances.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RoundRobin {
    pub port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
    /// How many connections went to each backend (same order as `backends`).
    pub served: Arc<Mutex<Vec<usize>>>,
}

impl RoundRobin {
    pub fn start(backends: &[u16]) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = RoundRobin {
            port,
            backends: Arc::new(Mutex::new(backends.to_vec())),
            stop: Arc::default(),
            served: Arc::new(Mutex::new(vec![0; backends.len()])),
        };
        let (list, stop, served) = (
            proxy.backends.clone(),
            proxy.stop.clone(),
            proxy.served.clone(),
        );
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let ports = list.lock().unwrap().clone();
                // The next backend that takes the connection.
                let mut upstream = None;
                for _ in 0..ports.len() {
                    let i = next.fetch_add(1, Ordering::SeqCst) % ports.len();
                    if let Ok(s) = TcpStream::connect_timeout(
                        &([127, 0, 0, 1], ports[i]).into(),
                        Duration::from_secs(2),
                    ) {
                        served.lock().unwrap()[i] += 1;
                        upstream = Some(s);
                        break;
                    }
                }
                let Some(upstream) = upstream else {
                    // Nobody there: the client sees its connection closed (Nginx: 502).
                    continue;
                };
                pipe(client, upstream);
            }
        });
        proxy
    }

    /// Replaces a backend's port (an instance restarted on a new port).
    pub fn set_backend(&self, index: usize, port: u16) {
        self.backends.lock().unwrap()[index] = port;
    }
}

/// Copies both ways until either side closes.
fn pipe(client: TcpStream, upstream: TcpStream) {
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    std::thread::spawn(move || copy(client, upstream));
    std::thread::spawn(move || copy(u2, c2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
