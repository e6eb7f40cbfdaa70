//! A TCP gate on loopback in front of a server (the S3 server): connections pass through
//! until the gate is shut, then are refused (nothing listens on its port) and the open ones
//! are cut, as a store restarting behind its address would do, until it opens again.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The gate (its threads live as long as the test process).
#[derive(Debug)]
pub struct Gate {
    port: u16,
    upstream: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set while the gate refuses: the accept loop ends and no listener holds the port.
    shut: AtomicBool,
    /// Connections passing now (both ends), cut when the gate shuts.
    open: Mutex<Vec<TcpStream>>,
}

impl Gate {
    /// A gate on a free loopback port forwarding to `upstream` (`127.0.0.1:PORT`).
    pub fn new(upstream: &str) -> io::Result<Gate> {
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let gate = Gate {
            port,
            upstream,
            state: Arc::default(),
        };
        gate.serve(listener);
        Ok(gate)
    }

    /// `http://127.0.0.1:PORT`, the address to use instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuses every connection for `duration` (open ones are cut at once), then lets them
    /// through again; returns at once.
    pub fn shut_for(&self, duration: Duration) {
        self.state.shut.store(true, Ordering::SeqCst);
        // Wake the accept loop so it drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for stream in self
            .state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let (port, upstream, state) = (self.port, self.upstream, self.state.clone());
        thread::spawn(move || {
            thread::sleep(duration);
            // The port is free again once the old listener is gone; retry briefly.
            for _ in 0..100 {
                if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                    state.shut.store(false, Ordering::SeqCst);
                    Gate {
                        port,
                        upstream,
                        state,
                    }
                    .serve_detached(listener);
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            panic!("the gate could not listen on port {port} again");
        });
    }

    fn serve(&self, listener: TcpListener) {
        Gate {
            port: self.port,
            upstream: self.upstream,
            state: self.state.clone(),
        }
        .serve_detached(listener);
    }

    fn serve_detached(self, listener: TcpListener) {
        thread::spawn(move || {
            for client in listener.incoming() {
                if self.state.shut.load(Ordering::SeqCst) {
                    return; // drops the listener: connections are refused
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(self.upstream) else {
                    continue;
                };
                let mut open = self.state.open.lock().unwrap_or_else(|p| p.into_inner());
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                open.extend([client, server]);
            }
        });
    }
}
