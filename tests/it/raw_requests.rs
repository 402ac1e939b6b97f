//! Requests no well-behaved client sends, written byte for byte: odd methods and versions,
//! paths with dot segments, encodings and backslashes, missing, doubled or malformed `Host`,
//! framing that lies (short bodies, bad chunks, both `Content-Length` and chunked), bodies that
//! are not what they claim. Generated from a fixed seed, so a failure replays. Whatever seawall
//! makes of them, it must answer each with a status below 500 and never count one against the
//! upstream's breaker: the upstream is healthy throughout.

use std::sync::Arc;

use tempfile::TempDir;

use crate::backend::Backend;
use crate::support::{BREAKER_ON, Seawall, breaker_named, get, raw_exchange};

/// xorshift64*: deterministic, and enough to pick among a few choices.
struct Picker(u64);

impl Picker {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a, T: ?Sized>(&mut self, choices: &[&'a T]) -> &'a T {
        choices[self.below(choices.len())]
    }
}

const SEGMENTS: [&str; 22] = [
    "collect", "headers", "api", "1", "..", ".", "%2e", "%2E%2e", "%2F", "%5C", "%00", "%", "%zz",
    "é", ";x", "", "~", "%41", "\\", "*", "?q=/../1", "x",
];
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "BREW",
];
const VERSIONS: [&str; 3] = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"];
const HOSTS: [&[&str]; 9] = [
    &["app.example"],
    &["app.example"],
    &["app.example"],
    &["app.example:8080"],
    &[],
    &["a.example", "b.example"],
    &["a b"],
    &["[::1]:80"],
    &["user@app.example"],
];

/// Framing headers and the bytes that follow the head.
fn framing(picker: &mut Picker) -> (String, Vec<u8>) {
    let body: Vec<u8> = (0..picker.below(48))
        .map(|_| picker.below(256) as u8)
        .collect();
    let n = body.len();
    match picker.below(10) {
        0 => (String::new(), Vec::new()),
        1 => (format!("Content-Length: {n}\r\n"), body),
        // A declared length the body never reaches.
        2 => (format!("Content-Length: {}\r\n", n + 5), body),
        3 => {
            let mut chunked = format!("{n:x}\r\n").into_bytes();
            chunked.extend_from_slice(&body);
            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            ("Transfer-Encoding: chunked\r\n".to_string(), chunked)
        }
        4 => (
            "Transfer-Encoding: chunked\r\n".to_string(),
            [b"zz\r\n", &body[..]].concat(),
        ),
        5 => (
            format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
            b"0\r\n\r\n".to_vec(),
        ),
        6 => ("Content-Length: 99999999999999999999\r\n".to_string(), body),
        7 => ("Transfer-Encoding: gzip\r\n".to_string(), body),
        8 => (
            "Content-Type: application/json\r\nContent-Length: 12\r\n".to_string(),
            b"{\"a\":[[[[1]]".to_vec(),
        ),
        _ => (
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n".to_string(),
            b"pw=%zz&a=".to_vec(),
        ),
    }
}

fn request(picker: &mut Picker) -> Vec<u8> {
    let segments: Vec<&str> = (0..picker.below(5))
        .map(|_| picker.pick(&SEGMENTS))
        .collect();
    let path = format!("/{}", segments.join("/"));
    let mut head = format!(
        "{} {path} {}\r\n",
        picker.pick(&METHODS),
        picker.pick(&VERSIONS)
    );
    for host in HOSTS[picker.below(HOSTS.len())] {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    let (framing, body) = framing(picker);
    head.push_str(&framing);
    if picker.below(5) == 0 {
        head.push_str("Expect: 100-continue\r\n");
    }
    if picker.below(8) == 0 {
        head.push_str("Connection: x-request-id, keep-alive\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    [head.into_bytes(), body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_malformed_requests_get_a_client_error_and_cost_the_upstream_nothing() {
    let backend = Backend::start().await;
    let config = format!(
        r#"
[upstreams.app]
url = "{}"
timeout_ms = 3000

[[routes]]
name = "audited"
match = "/api/*"
upstream = "app"
strip_prefix = "/api"
audit = {{ level = "request_response" }}

[[routes]]
name = "all"
match = "/*"
upstream = "app"
"#,
        backend.url()
    );
    let env = [BREAKER_ON.as_slice(), &[("FF_ENABLE_AUDIT_TRAIL", "true")]].concat();
    let seawall = Seawall::start_in(Arc::new(TempDir::new().unwrap()), &config, &env);
    let mut picker = Picker(0x05ea_fa11_2026);
    let requests: Vec<Vec<u8>> = (0..1000).map(|_| request(&mut picker)).collect();
    // Sixteen at a time: the requests whose body never comes each wait out the upstream's
    // timeout, which is long enough that no complete request meets it on a loaded machine.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let exchanges: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let in_flight = in_flight.clone();
            let proxy = seawall.proxy;
            tokio::spawn(async move {
                let _turn = in_flight.acquire_owned().await.unwrap();
                let reply = raw_exchange(proxy, &request).await;
                (request, reply)
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut reached = 0;
    for exchange in exchanges {
        let (request, reply) = exchange.await.unwrap();
        let status = reply.status.as_u16();
        if status >= 500 {
            let id = reply.header("x-request-id").unwrap_or("none").to_string();
            let logs = seawall.logs();
            let seen: Vec<&str> = logs.lines().filter(|l| l.contains(&id)).collect();
            panic!(
                "{status} for {:?}: {}\nits log lines: {seen:#?}",
                String::from_utf8_lossy(&request),
                reply.text()
            );
        }
        *statuses.entry(status).or_default() += 1;
        reached += usize::from(!reply.body.starts_with(br#"{"ok":false"#));
    }
    // The run reached the upstream and was refused at the edge, both many times.
    assert!(
        reached >= 100 && statuses[&400] >= 100,
        "{reached} reached the upstream; {statuses:?}"
    );
    let calls = &breaker_named(&seawall, "app").await["calls"];
    assert_eq!(calls["failed"], 0, "{statuses:?} {calls}");
    assert_eq!(get(&seawall.proxy_url("/health/ready")).await.status, 200);
}
