//! The one HTTP/1.1 client of the benchmark and of the tests: one request per connection
//! (`Connection: close`), read to the end, the status, headers and body returned (a chunked
//! body decoded, as actix-web sends larger replies). The servers it talks to are the router's
//! metrics listener, the simulators' control API and a test's Prometheus, all on loopback and
//! all ours, so a few lines of HTTP do and no HTTP crate is needed.
//!
//! The tests include this file with `#[path]`; some items (`get`, the headers, the blocking
//! form) serve only them.
#![allow(dead_code)]

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON: `Null` when empty, an error quoting it when it is not JSON.
    pub fn json(&self) -> Result<Value, String> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the body is not JSON ({e}): {:?}", self.text()))
    }

    /// The JSON body of a 200; otherwise an error naming `what` (e.g. the request) and what
    /// the server answered.
    pub fn ok_json(&self, what: &str) -> Result<Value, String> {
        if self.status != 200 {
            return Err(format!("{what}: HTTP {}: {}", self.status, self.text()));
        }
        self.json().map_err(|e| format!("{what}: {e}"))
    }
}

/// Send `method path` with these extra header fields and body to `addr`, and read the whole
/// response, within `within`. `Host`, `Connection: close` and `Content-Length` are added.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    within: Duration,
) -> Result<Response, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{method} {path}: cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        stream
            .write_all(&raw)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        parse(&reply).map_err(|e| format!("{method} {path}: {e}"))
    };
    tokio::time::timeout(within, exchange).await.map_err(|_| {
        format!(
            "{method} {path}: no answer from {addr} within {} s",
            within.as_secs_f64()
        )
    })?
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<Response, String> {
    request(addr, "GET", path, &[], &[], within).await
}

/// `POST path` with a JSON body (`Content-Type: application/json`, which the simulators'
/// control API requires).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    within: Duration,
) -> Result<Response, String> {
    let headers = [("Content-Type", "application/json")];
    request(
        addr,
        "POST",
        path,
        &headers,
        body.to_string().as_bytes(),
        within,
    )
    .await
}

/// [`get`] from code that has no runtime of its own (on a runtime made for the purpose).
pub fn get_blocking(addr: SocketAddr, path: &str, within: Duration) -> Result<Response, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(get(addr, path, within))
}

/// Read a complete response: status line, header fields, and the body (de-chunked when the
/// response says `Transfer-Encoding: chunked`).
pub fn parse(raw: &[u8]) -> Result<Response, String> {
    let not_http = || {
        format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    };
    let split = find(raw, b"\r\n\r\n").ok_or_else(not_http)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| not_http())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_http)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.body = dechunk(&response.body)?;
    }
    Ok(response)
}

/// The data of a chunked body (chunk extensions ignored, trailers dropped).
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let bad = || "a chunked body cut short or malformed".to_owned();
        let line_end = find(data, b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(bad)?);
        data = data.get(size + 2..).ok_or_else(bad)?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
