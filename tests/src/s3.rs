//! The S3 server for tests: moto on 127.0.0.1, one bucket per test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A bucket on the test S3 server.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
}

struct Server {
    endpoint: String,
    _child: Option<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("LIFEBOAT_TEST_S3_ENDPOINT") {
            return Server { endpoint, _child: None };
        }
        // No shared server: start one for this test binary. A shell holds it and kills it
        // when our end of its stdin closes, i.e. when this process exits however it exits.
        let port = free_port();
        let exe = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let script = format!("{exe} -H 127.0.0.1 -p {port} & pid=$!; cat >/dev/null; kill $pid");
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the S3 server `{exe}` ({e}); run the tests with scripts/test, which installs it")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        if !wait_until_up(&endpoint) {
            panic!("the S3 server `{exe}` did not come up on {endpoint}; run the tests with scripts/test, which installs it");
        }
        Server {
            endpoint,
            _child: Some(child),
        }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls until the server accepts connections (moto takes 4–6 s to start).
fn wait_until_up(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Sends one bodiless HTTP request and returns the status code.
fn request(endpoint: &str, method: &str, path: &str) -> u16 {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to the S3 server");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply from the S3 server: {response:?}"))
}

impl S3 {
    /// A new, empty bucket for one test.
    pub fn bucket(test: &str) -> Self {
        let server = server();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let bucket = format!("{}-{}-{n}", test.replace('_', "-"), std::process::id())
            .to_ascii_lowercase()
            .chars()
            .take(63)
            .collect::<String>();
        let status = request(&server.endpoint, "PUT", &format!("/{bucket}"));
        assert!(
            status == 200,
            "creating bucket {bucket} answered HTTP {status}"
        );
        Self {
            endpoint: server.endpoint.clone(),
            bucket,
        }
    }

    /// A name for a bucket that does not exist.
    pub fn missing_bucket() -> Self {
        let server = server();
        Self {
            endpoint: server.endpoint.clone(),
            bucket: format!("no-such-bucket-{}", std::process::id()),
        }
    }

    /// The repository under `prefix` in restic's syntax, which lifeboat accepts too.
    pub fn restic_url(&self, prefix: &str) -> String {
        format!("s3:{}/{}/{prefix}", self.endpoint, self.bucket)
    }

    /// Environment for restic and lifeboat: moto accepts any credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }

    /// Sets the credentials in this process's environment (for in-process engine tests).
    pub fn export_env(&self) {
        for (k, v) in self.env() {
            set_env(k, &v);
        }
    }
}

#[allow(unsafe_code)]
fn set_env(key: &str, value: &str) {
    if std::env::var(key).as_deref() == Ok(value) {
        return;
    }
    // SAFETY: only ever called with the same constant values, before any engine call reads
    // them; tests never remove or change them afterwards.
    unsafe { std::env::set_var(key, value) };
}
