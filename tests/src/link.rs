//! A shaped link on loopback in front of an HTTP/1.1 server (the S3 server): added round-trip
//! time, a bandwidth cap, and faults injected per request, for the benchmark and the fault
//! tests. The kernels these tests run on have no netem qdisc (TESTING.md), so the link is a
//! proxy of our own.
//!
//! # Latency without a throughput cap
//!
//! Every byte is delivered half a round trip after the link read it, in each direction. Each
//! direction of each connection is a delay line: a reader stamps the bytes it reads with their
//! due time and queues them; a writer thread sleeps until each piece is due and writes it. The
//! reader never waits for the writer's sleep, so a stream of bytes still flows at full rate,
//! only later. What is in flight per direction and connection is capped at [`WINDOW`], as a TCP
//! window caps it on a real path (throughput per connection ≤ window / RTT).
//!
//! # Bandwidth
//!
//! One token bucket per direction for the whole link (all connections share it), applied by
//! the writers after the delay: a piece of `n` bytes occupies the link for `n / rate` seconds.
//!
//! # HTTP framing and faults
//!
//! The link reads HTTP/1.1 messages, not just bytes: requests (request line and headers, body
//! by `Content-Length` or chunked transfer coding) and responses (status line and headers; no
//! body for HEAD, 1xx, 204 and 304; then chunked, `Content-Length`, or until the server closes).
//! So it counts requests on kept-alive connections and faults single requests. Faults are
//! deterministic: every request the link reads takes the next number of one link-wide
//! sequence, and [`Faults`] picks numbers by divisibility (which request gets which number
//! depends only on the order concurrent requests arrive in). A retry is a new request with a
//! new number, so it can pass. Clients are assumed not to pipeline (no HTTP client in use
//! does). A request the link answers or resets itself is read whole first, so a client that
//! sent `Expect: 100-continue` would wait out its own expect timeout before sending the body.
//!
//! Opening a connection costs no round trip: the kernel accepts it on loopback at once and the
//! link connects upstream then. moto answers every request with `Connection: close`, so its
//! clients open a connection per request, where against a real store they would reuse one;
//! charging a handshake would bill them for moto's habit, not for the path.
//!
//! # Threads
//!
//! Per connection: the request side reads the client and feeds the upstream delay line; the
//! response side reads the server and feeds the client delay line (it takes each response's
//! request method and fault from a queue the request side fills in order); one writer per
//! delay line. Everything is detached and lives as long as the process, like [`crate::gate`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The most bytes in flight per direction of one connection: Linux's default ceiling for a
/// TCP receive window (`tcp_rmem` max) is 6 MiB; 4 MiB keeps one connection at 80 ms RTT to
/// about 50 MiB/s, as on a real long path.
pub const WINDOW: usize = 4 << 20;

/// Bytes read from a socket at once.
const READ: usize = 64 << 10;

/// The longest request or status line plus headers (or chunk-size line) the link accepts.
const MAX_HEAD: usize = 1 << 20;

/// What the link does to traffic.
#[derive(Debug, Clone, Default)]
pub struct LinkOptions {
    /// Round-trip time: each byte arrives `rtt / 2` after it was sent, in each direction.
    pub rtt: Duration,
    /// Bytes per second in each direction, shared by all connections; `None`: unlimited.
    pub bandwidth: Option<u64>,
    pub faults: Faults,
}

/// Which requests fail, by their number in the link's sequence of requests (from 1). When
/// several rules pick the same number, the first in field order wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every Nth request is answered by the link with S3's `503 SlowDown`, not forwarded.
    pub slow_down_every: Option<u32>,
    /// Every Nth request has its client connection reset (RST) once the request was read:
    /// alternately before forwarding it, and half-way through the response (half its body,
    /// or half its header when it has no `Content-Length` body).
    pub reset_every: Option<u32>,
    /// Every Nth request is forwarded but its response is never delivered: the connection
    /// stays open and silent until the client gives up and closes it.
    pub stall_every: Option<u32>,
}

/// What went over the link since it started or since [`Link::reset_counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests read (each forwarded, answered by the link, or faulted).
    pub requests: u64,
    pub get: u64,
    pub put: u64,
    pub post: u64,
    pub head: u64,
    pub delete: u64,
    /// Requests with any other method.
    pub other: u64,
    /// Bytes from clients to the server, and from the server to clients.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Faults injected.
    pub slow_downs: u64,
    pub resets_before_forwarding: u64,
    pub resets_mid_response: u64,
    pub stalls: u64,
    /// Round trips waited for: the longest chain of requests each sent after the one before it
    /// was answered. Requests sent together count once, however many; a job's fixed cost on a
    /// slow link is this times the round-trip time.
    pub round_trips: u64,
}

impl LinkStats {
    /// Resets of either kind.
    pub fn resets(&self) -> u64 {
        self.resets_before_forwarding + self.resets_mid_response
    }
}

/// A running link (its threads live as long as the test process).
#[derive(Debug)]
pub struct Link {
    port: u16,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    opts: LinkOptions,
    /// The number of the last request read: never reset, so faults keep their rhythm.
    sequence: AtomicU64,
    /// Resets decided so far, to alternate their two kinds.
    resets: AtomicU64,
    counters: Counters,
    chains: Mutex<Chains>,
    up: Option<Bucket>,
    down: Option<Bucket>,
}

/// How long the chains of requests that waited for each other are (see
/// [`LinkStats::round_trips`]).
#[derive(Debug, Default)]
struct Chains {
    /// Answers still on their way to the client: when they arrive, and their chain's length.
    arriving: Vec<(Instant, u64)>,
    /// The longest chain whose last answer has arrived.
    answered: u64,
    /// The longest chain so far.
    longest: u64,
}

impl Chains {
    /// A request read now: one longer than the longest chain answered before it was sent.
    fn sent(&mut self) -> u64 {
        let now = Instant::now();
        let answered = &mut self.answered;
        self.arriving.retain(|&(at, length)| {
            if at <= now {
                *answered = (*answered).max(length);
            }
            at > now
        });
        let length = *answered + 1;
        self.longest = self.longest.max(length);
        length
    }

    /// The request's answer reaches the client at `at`.
    fn answered(&mut self, at: Instant, length: u64) {
        self.arriving.push((at, length));
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    get: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    slow_downs: AtomicU64,
    resets_before_forwarding: AtomicU64,
    resets_mid_response: AtomicU64,
    stalls: AtomicU64,
}

impl Counters {
    fn all(&self) -> [&AtomicU64; 14] {
        [
            &self.connections,
            &self.requests,
            &self.get,
            &self.put,
            &self.post,
            &self.head,
            &self.delete,
            &self.other,
            &self.bytes_up,
            &self.bytes_down,
            &self.slow_downs,
            &self.resets_before_forwarding,
            &self.resets_mid_response,
            &self.stalls,
        ]
    }

    fn method(&self, method: &str) -> &AtomicU64 {
        match method {
            "GET" => &self.get,
            "PUT" => &self.put,
            "POST" => &self.post,
            "HEAD" => &self.head,
            "DELETE" => &self.delete,
            _ => &self.other,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Link {
    /// A link on a free loopback port forwarding to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, opts: LinkOptions) -> io::Result<Link> {
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bucket = |rate: Option<u64>| rate.map(Bucket::new);
        let shared = Arc::new(Shared {
            upstream,
            up: bucket(opts.bandwidth),
            down: bucket(opts.bandwidth),
            opts,
            sequence: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            counters: Counters::default(),
            chains: Mutex::default(),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(accepting.upstream) else {
                    continue; // dropping the client closes it, as a dead server would
                };
                bump(&accepting.counters.connections, 1);
                connect(client, server, &accepting);
            }
        });
        Ok(Link { port, shared })
    }

    /// `http://127.0.0.1:PORT`, the address to use instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests read since the start or the last [`Link::reset_counters`].
    pub fn requests(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::Relaxed)
    }

    /// All counters.
    pub fn stats(&self) -> LinkStats {
        let [
            connections,
            requests,
            get,
            put,
            post,
            head,
            delete,
            other,
            bytes_up,
            bytes_down,
            slow_downs,
            resets_before_forwarding,
            resets_mid_response,
            stalls,
        ] = self
            .shared
            .counters
            .all()
            .map(|c| c.load(Ordering::Relaxed));
        LinkStats {
            connections,
            requests,
            get,
            put,
            post,
            head,
            delete,
            other,
            bytes_up,
            bytes_down,
            slow_downs,
            resets_before_forwarding,
            resets_mid_response,
            stalls,
            round_trips: lock(&self.shared.chains).longest,
        }
    }

    /// Zeroes the counters (not the fault sequence), to count one job at a time.
    pub fn reset_counters(&self) {
        for counter in self.shared.counters.all() {
            counter.store(0, Ordering::Relaxed);
        }
        *lock(&self.shared.chains) = Chains::default();
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    SlowDown,
    ResetBeforeForwarding,
    ResetMidResponse,
    Stall,
}

impl Shared {
    /// Numbers the next request and picks its fault.
    fn next_fault(&self) -> Fault {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let hits =
            |every: Option<u32>| every.is_some_and(|e| e > 0 && n.is_multiple_of(u64::from(e)));
        let faults = &self.opts.faults;
        let (fault, counter) = if hits(faults.slow_down_every) {
            (Fault::SlowDown, &self.counters.slow_downs)
        } else if hits(faults.reset_every) {
            if self
                .resets
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(2)
            {
                (
                    Fault::ResetBeforeForwarding,
                    &self.counters.resets_before_forwarding,
                )
            } else {
                (Fault::ResetMidResponse, &self.counters.resets_mid_response)
            }
        } else if hits(faults.stall_every) {
            (Fault::Stall, &self.counters.stalls)
        } else {
            return Fault::None;
        };
        bump(counter, 1);
        fault
    }

    fn half_rtt(&self) -> Duration {
        self.opts.rtt / 2
    }
}

/// Starts the four threads of one connection.
fn connect(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    // Small writes (headers) must not wait for Nagle's algorithm: that would add delayed-ACK
    // stalls of tens of milliseconds that no real path has.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client, server) = (Arc::new(client), Arc::new(server));
    let up = Pipe::start(
        server.clone(),
        shared.up.clone(),
        shared.clone(),
        Direction::Up,
    );
    let down = Pipe::start(
        client.clone(),
        shared.down.clone(),
        shared.clone(),
        Direction::Down,
    );
    let (pending_tx, pending_rx) = mpsc::channel();
    let request_side = (shared.clone(), down.clone());
    thread::spawn(move || {
        let (shared, down) = request_side;
        let _ = requests(&client, &shared, &up, &down, &pending_tx);
    });
    let shared = shared.clone();
    thread::spawn(move || {
        let _ = responses(&server, &shared, &down, &pending_rx);
        down.close();
    });
}

/// A forwarded request, as the response side needs to know it.
#[derive(Debug)]
struct Pending {
    head_request: bool,
    fault: Fault,
    /// Its place in its chain of requests.
    chain: u64,
}

/// The request side: reads requests from the client and forwards, answers or faults each.
fn requests(
    client: &TcpStream,
    shared: &Shared,
    up: &Pipe,
    down: &Pipe,
    pending: &Sender<Pending>,
) -> io::Result<()> {
    let mut from = Framed::new(client);
    let counters = &shared.counters;
    while let Some(head) = from.read_head()? {
        let method = head.method().to_string();
        bump(&counters.requests, 1);
        bump(counters.method(&method), 1);
        let body = head.request_body()?;
        let fault = shared.next_fault();
        let chain = lock(&shared.chains).sent();
        let due = || Instant::now() + shared.half_rtt();
        let mut discard = |bytes: &[u8]| -> io::Result<()> {
            bump(&counters.bytes_up, bytes.len() as u64);
            Ok(())
        };
        match fault {
            Fault::None | Fault::Stall | Fault::ResetMidResponse => {
                // Queued before the request goes out, so it is there when the response is.
                pending
                    .send(Pending {
                        head_request: method == "HEAD",
                        fault,
                        chain,
                    })
                    .map_err(|_| closed())?;
                up.send(&head.raw, due())?;
                from.relay_body(body, &mut |bytes| up.send(bytes, due()))?;
            }
            Fault::SlowDown => {
                discard(&head.raw)?;
                from.relay_body(body, &mut discard)?;
                // A whole round trip: the request's way to the server and the answer's back.
                let answer = slow_down(method == "HEAD");
                let at = Instant::now() + shared.opts.rtt;
                down.send(&answer, at)?;
                lock(&shared.chains).answered(at, chain);
            }
            Fault::ResetBeforeForwarding => {
                discard(&head.raw)?;
                from.relay_body(body, &mut discard)?;
                down.reset(due());
                return Ok(());
            }
        }
    }
    Ok(())
}

/// S3's answer to too many requests (the body is left out for a HEAD request).
fn slow_down(head_request: bool) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message></Error>";
    let mut answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: lifeboat-link\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_request {
        answer.extend_from_slice(body.as_bytes());
    }
    answer
}

/// The response side: reads responses from the server and delivers, stalls or cuts each.
fn responses(
    server: &TcpStream,
    shared: &Shared,
    down: &Pipe,
    pending: &Receiver<Pending>,
) -> io::Result<()> {
    let mut from = Framed::new(server);
    let due = || Instant::now() + shared.half_rtt();
    while let Some(mut head) = from.read_head()? {
        // A response the client did not ask for (or one to a request we faulted): stop.
        let Ok(request) = pending.recv() else {
            return Ok(());
        };
        // Interim responses (100 Continue) go through; the final one follows.
        while head.is_interim() {
            down.send(&head.raw, due())?;
            head = from.read_head()?.ok_or_else(closed)?;
        }
        let body = head.response_body(request.head_request)?;
        match request.fault {
            // (Requests answered or reset by the link are never forwarded, so never here.)
            Fault::None | Fault::SlowDown | Fault::ResetBeforeForwarding => {
                down.send(&head.raw, due())?;
                from.relay_body(body, &mut |bytes| down.send(bytes, due()))?;
                lock(&shared.chains).answered(due(), request.chain);
            }
            Fault::Stall => {
                // Nothing more reaches the client; the connection stays open until the
                // client closes it, which closes the server's side and ends this loop.
                io::copy(&mut from, &mut io::sink())?;
                return Ok(());
            }
            Fault::ResetMidResponse => {
                let mut left = match body {
                    Body::Length(n) if n > 0 => head.raw.len() as u64 + n / 2,
                    _ => head.raw.len() as u64 / 2,
                };
                let mut cut = |bytes: &[u8]| -> io::Result<()> {
                    let n = left.min(bytes.len() as u64);
                    left -= n;
                    if n > 0 {
                        down.send(&bytes[..n as usize], due())?;
                    }
                    Ok(())
                };
                cut(&head.raw)?;
                from.relay_body(body, &mut cut)?;
                down.reset(due());
                io::copy(&mut from, &mut io::sink())?;
                return Ok(());
            }
        }
    }
    Ok(())
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the other side of the link closed",
    )
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// One direction of one connection: a delay line into a socket.
#[derive(Debug, Clone)]
struct Pipe {
    tx: Sender<Piece>,
    window: Arc<Window>,
    shared: Arc<Shared>,
    direction: Direction,
}

#[derive(Debug)]
enum Piece {
    /// Bytes to write at `due`.
    Data { bytes: Vec<u8>, due: Instant },
    /// Reset the connection at `due` (SO_LINGER 0, then close: the peer gets an RST).
    Reset { due: Instant },
    /// Close the socket for writing (FIN) after what came before.
    Close,
}

impl Pipe {
    fn start(
        to: Arc<TcpStream>,
        bucket: Option<Bucket>,
        shared: Arc<Shared>,
        direction: Direction,
    ) -> Pipe {
        let (tx, rx) = mpsc::channel();
        let window = Arc::new(Window::default());
        let writer = window.clone();
        thread::spawn(move || deliver(&rx, &writer, &to, bucket.as_ref()));
        Pipe {
            tx,
            window,
            shared,
            direction,
        }
    }

    /// Queues `bytes` for delivery at `due`; waits while the window is full.
    fn send(&self, bytes: &[u8], due: Instant) -> io::Result<()> {
        self.window.acquire(bytes.len())?;
        let counters = &self.shared.counters;
        let counter = match self.direction {
            Direction::Up => &counters.bytes_up,
            Direction::Down => &counters.bytes_down,
        };
        bump(counter, bytes.len() as u64);
        self.tx
            .send(Piece::Data {
                bytes: bytes.to_vec(),
                due,
            })
            .map_err(|_| closed())
    }

    fn reset(&self, due: Instant) {
        let _ = self.tx.send(Piece::Reset { due });
    }

    fn close(&self) {
        let _ = self.tx.send(Piece::Close);
    }
}

/// The writer of a delay line.
fn deliver(rx: &Receiver<Piece>, window: &Window, to: &TcpStream, bucket: Option<&Bucket>) {
    for piece in rx {
        match piece {
            Piece::Data { bytes, due } => {
                sleep_until(due);
                if let Some(bucket) = bucket {
                    bucket.take(bytes.len());
                }
                let written = (&*to).write_all(&bytes);
                window.release(bytes.len());
                if written.is_err() {
                    break;
                }
            }
            Piece::Reset { due } => {
                sleep_until(due);
                let _ = linger_zero(to);
                // Wakes the request side's read, so it drops its handle too: the last handle
                // closed closes the socket, and with SO_LINGER 0 that sends the RST.
                let _ = to.shutdown(Shutdown::Read);
                window.close();
                return;
            }
            Piece::Close => break,
        }
    }
    window.close();
    let _ = to.shutdown(Shutdown::Write);
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// Makes closing `stream` reset the connection instead of ending it in order.
#[allow(unsafe_code)]
fn linger_zero(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is a live socket owned by `stream`, and the option value points
    // at a local `linger` of exactly the length passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes in flight on one delay line, bounded by [`WINDOW`].
#[derive(Debug, Default)]
struct Window {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Window {
    /// Waits until `n` more bytes fit (a piece larger than the window goes alone).
    fn acquire(&self, n: usize) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (in_flight, closed) = *state;
            if closed {
                return Err(self::closed());
            }
            if in_flight == 0 || in_flight + n <= WINDOW {
                state.0 += n;
                return Ok(());
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn release(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = state.0.saturating_sub(n);
        self.changed.notify_all();
    }

    /// The writer is gone: senders fail instead of waiting forever.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }
}

/// A bandwidth limit: pieces are scheduled back to back at `rate` bytes per second.
#[derive(Debug, Clone)]
struct Bucket {
    rate: u64,
    /// When the link is free again.
    free_at: Arc<Mutex<Instant>>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate.max(1),
            free_at: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Waits for this piece's turn on the link.
    fn take(&self, n: usize) {
        let start = {
            let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*free_at).max(Instant::now());
            *free_at = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            start
        };
        sleep_until(start);
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A request or status line and its headers, as read.
#[derive(Debug)]
struct Head {
    /// The bytes as they came, through the blank line.
    raw: Vec<u8>,
    start_line: String,
    headers: Vec<(String, String)>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Head {
    fn parse(raw: Vec<u8>) -> io::Result<Head> {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("not a header: {l:?}")))?;
                Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            })
            .collect::<io::Result<_>>()?;
        Ok(Head {
            raw,
            start_line,
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or_default()
    }

    fn status(&self) -> Option<u16> {
        self.start_line.split(' ').nth(1)?.parse().ok()
    }

    fn is_interim(&self) -> bool {
        self.status()
            .is_some_and(|s| (100..200).contains(&s) && s != 101)
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(format!("Content-Length {v:?}")))
            })
            .transpose()
    }

    fn request_body(&self) -> io::Result<Body> {
        Ok(if self.chunked() {
            Body::Chunked
        } else {
            self.content_length()?.map_or(Body::None, Body::Length)
        })
    }

    fn response_body(&self, head_request: bool) -> io::Result<Body> {
        let status = self
            .status()
            .ok_or_else(|| invalid(format!("not a status line: {:?}", self.start_line)))?;
        Ok(
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                Body::None
            } else if self.chunked() {
                Body::Chunked
            } else {
                self.content_length()?
                    .map_or(Body::UntilClose, Body::Length)
            },
        )
    }
}

/// A byte stream read message by message.
#[derive(Debug)]
struct Framed<R> {
    inner: R,
    /// Read but not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Framed<R> {
    fn new(inner: R) -> Self {
        Framed {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Reads more; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let len = self.buf.len();
        self.buf.resize(len + READ, 0);
        let read = loop {
            match self.inner.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        Ok(read? > 0)
    }

    /// Consumes and returns everything through the first `delimiter`.
    fn read_through(&mut self, delimiter: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0usize;
        loop {
            let buffered = self.buffered();
            let from = searched.saturating_sub(delimiter.len() - 1);
            if let Some(at) = buffered[from..]
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let end = from + at + delimiter.len();
                let line = buffered[..end].to_vec();
                self.consume(end);
                return Ok(Some(line));
            }
            searched = buffered.len();
            if searched > MAX_HEAD {
                return Err(invalid("a header or chunk line longer than 1 MiB"));
            }
            if !self.fill()? {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// The next message's head; None when the stream ends between messages.
    fn read_head(&mut self) -> io::Result<Option<Head>> {
        self.read_through(b"\r\n\r\n")?.map(Head::parse).transpose()
    }

    /// Passes the body's bytes to `out` as they arrive, exactly as they came (chunk framing
    /// included), and consumes them.
    fn relay_body(
        &mut self,
        body: Body,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match body {
            Body::None => Ok(()),
            Body::Length(n) => self.relay_exactly(n, out),
            Body::UntilClose => loop {
                if !self.buffered().is_empty() {
                    out(self.buffered())?;
                    self.consume(self.buffered().len());
                }
                if !self.fill()? {
                    return Ok(());
                }
            },
            Body::Chunked => loop {
                let line = self
                    .read_through(b"\r\n")?
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                out(&line)?;
                let text = String::from_utf8_lossy(&line);
                let hex = text.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(hex, 16)
                    .map_err(|_| invalid(format!("chunk size {hex:?}")))?;
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        let line = self
                            .read_through(b"\r\n")?
                            .ok_or(io::ErrorKind::UnexpectedEof)?;
                        out(&line)?;
                        if line == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                // The chunk and its CRLF.
                self.relay_exactly(size + 2, out)?;
            },
        }
    }

    fn relay_exactly(
        &mut self,
        mut left: u64,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while left > 0 {
            if self.buffered().is_empty() && !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = (self.buffered().len() as u64).min(left) as usize;
            out(&self.buffered()[..n])?;
            self.consume(n);
            left -= n as u64;
        }
        Ok(())
    }
}

impl<R: Read> Read for Framed<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buffered().is_empty() {
            return self.inner.read(out);
        }
        let n = self.buffered().len().min(out.len());
        out[..n].copy_from_slice(&self.buffered()[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A reader that returns at most `step` bytes per read, to cross every boundary.
    struct Trickle(VecDeque<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            for (o, b) in out.iter_mut().zip(self.0.drain(..n)) {
                *o = b;
            }
            Ok(n)
        }
    }

    /// Splits `stream` into messages, each body delimited by `framing(head, index)`.
    fn split(stream: &str, step: usize, framing: impl Fn(&Head, usize) -> Body) -> Vec<String> {
        let mut framed = Framed::new(Trickle(stream.bytes().collect(), step));
        let mut out = Vec::new();
        while let Some(head) = framed.read_head().expect("a head") {
            let mut message = head.raw.clone();
            framed
                .relay_body(framing(&head, out.len()), &mut |b| {
                    message.extend_from_slice(b);
                    Ok(())
                })
                .expect("a body");
            out.push(String::from_utf8(message).expect("UTF-8"));
        }
        out
    }

    #[test]
    fn chunked_and_sized_requests_are_split_where_they_end() {
        let chunked = "PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5;ext=1\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n";
        let sized = "POST /b?delete HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let bare = "GET /b/k HTTP/1.1\r\n\r\n";
        for step in [1, 3, 7, 4096] {
            let got = split(&[chunked, sized, bare].concat(), step, |head, _| {
                head.request_body().expect("framing")
            });
            assert_eq!(got, [chunked, sized, bare], "read {step} bytes at a time");
        }
    }

    #[test]
    fn a_head_response_has_no_body_whatever_its_length_says() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let no_content = "HTTP/1.1 204 No Content\r\n\r\n";
        let get = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let until_close = "HTTP/1.0 200 OK\r\n\r\nthe rest";
        for step in [1, 5, 4096] {
            let got = split(
                &[head, no_content, get, until_close].concat(),
                step,
                |h, i| h.response_body(i == 0).expect("framing"),
            );
            assert_eq!(got, [head, no_content, get, until_close]);
        }
    }

    #[test]
    fn faults_follow_the_request_numbers() {
        let shared = Shared {
            upstream: "127.0.0.1:1".parse().expect("an address"),
            opts: LinkOptions {
                faults: Faults {
                    slow_down_every: Some(3),
                    reset_every: Some(4),
                    stall_every: Some(5),
                },
                ..LinkOptions::default()
            },
            sequence: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            counters: Counters::default(),
            chains: Mutex::default(),
            up: None,
            down: None,
        };
        let got: Vec<Fault> = (0..12).map(|_| shared.next_fault()).collect();
        let want = {
            use Fault::{None as Pass, ResetBeforeForwarding as Before, ResetMidResponse as Mid};
            use Fault::{SlowDown as Slow, Stall};
            [
                Pass, Pass, Slow, Before, Stall, Slow, Pass, Mid, Slow, Stall, Pass, Slow,
            ]
        };
        assert_eq!(got, want);
    }

    /// A server answering every request on a kept-alive connection with `200 hello`.
    fn hello_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                thread::spawn(move || {
                    let mut framed = Framed::new(&conn);
                    while let Ok(Some(head)) = framed.read_head() {
                        let body = head.request_body().expect("framing");
                        framed.relay_body(body, &mut |_| Ok(())).expect("a body");
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
                        (&conn).write_all(answer).expect("answer");
                    }
                });
            }
        });
        addr
    }

    /// Sends `n` GETs one after another on one connection; each status, or the error.
    fn get(link: &Link, n: usize) -> Vec<io::Result<u16>> {
        let conn =
            TcpStream::connect(link.endpoint().trim_start_matches("http://")).expect("connect");
        let mut framed = Framed::new(&conn);
        (0..n)
            .map(|_| {
                (&conn).write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let head = framed.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
                let body = head.response_body(false)?;
                framed.relay_body(body, &mut |_| Ok(()))?;
                head.status().ok_or_else(|| invalid("status"))
            })
            .collect()
    }

    #[test]
    fn a_kept_alive_connection_gets_its_slow_down_in_turn_one_round_trip_later() {
        let rtt = Duration::from_millis(40);
        let opts = LinkOptions {
            rtt,
            faults: Faults {
                slow_down_every: Some(2),
                ..Faults::default()
            },
            ..LinkOptions::default()
        };
        let link = Link::start(&hello_server(), opts).expect("a link");
        let started = Instant::now();
        let got: Vec<u16> = get(&link, 3)
            .into_iter()
            .map(|r| r.expect("a response"))
            .collect();
        assert_eq!(got, [200, 503, 200]);
        assert!(started.elapsed() >= 3 * rtt, "{:?}", started.elapsed());
        let stats = link.stats();
        assert_eq!((stats.requests, stats.get, stats.slow_downs), (3, 3, 1));
        assert_eq!(
            stats.round_trips, 3,
            "each request waited for the one before"
        );
        link.reset_counters();
        assert_eq!(link.stats(), LinkStats::default());
    }

    #[test]
    fn requests_sent_together_are_one_round_trip_and_those_after_their_answers_the_next() {
        let link = Link::start(
            &hello_server(),
            LinkOptions {
                rtt: Duration::from_millis(40),
                ..LinkOptions::default()
            },
        )
        .expect("a link");
        let together: Vec<_> = (0..4)
            .map(|_| {
                let endpoint = link.endpoint();
                thread::spawn(move || {
                    let conn = TcpStream::connect(endpoint.trim_start_matches("http://"))
                        .expect("connect");
                    (&conn)
                        .write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
                        .expect("send");
                    let mut framed = Framed::new(&conn);
                    let head = framed.read_head().expect("read").expect("a response");
                    head.status()
                })
            })
            .collect();
        for t in together {
            assert_eq!(t.join().expect("a thread"), Some(200));
        }
        assert_eq!((link.stats().requests, link.stats().round_trips), (4, 1));
        // Two more, one after the other, after those four were answered.
        assert!(get(&link, 2).into_iter().all(|r| r.is_ok()));
        assert_eq!((link.stats().requests, link.stats().round_trips), (6, 3));
    }

    #[test]
    fn a_reset_is_an_error_on_the_client_not_an_end_of_stream() {
        let opts = LinkOptions {
            faults: Faults {
                reset_every: Some(1),
                ..Faults::default()
            },
            ..LinkOptions::default()
        };
        let link = Link::start(&hello_server(), opts).expect("a link");
        for _ in 0..2 {
            let got = get(&link, 1).remove(0).expect_err("a reset");
            assert_eq!(got.kind(), io::ErrorKind::ConnectionReset, "{got}");
        }
        let stats = link.stats();
        assert_eq!(
            (stats.resets_before_forwarding, stats.resets_mid_response),
            (1, 1)
        );
    }
}
