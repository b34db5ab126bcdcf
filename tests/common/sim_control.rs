//! A small HTTP/1.1 JSON client for the simulator's control API, hand-rolled over a tokio
//! `TcpStream` (one request per connection, `Connection: close`), so tests need no HTTP crate.
//! Every POST says `Content-Type: application/json`, as the control API requires; `post_as`
//! sends anything else, to test the refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The control API of one simulator.
#[derive(Debug, Clone, Copy)]
pub struct SimControl {
    /// Where the control API listens.
    pub addr: SocketAddr,
}

impl SimControl {
    /// `GET path`: the status code and the JSON body (`Null` when empty).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None).await
    }

    /// `POST path` with a JSON body: the status code and the JSON reply.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(body)).await
    }

    /// `POST path`, asserting 200; returns the JSON reply.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.post(path, body).await;
        assert_eq!(status, 200, "POST {path}: {reply}");
        reply
    }

    /// `GET /state`, asserting 200.
    pub async fn state(&self) -> Value {
        let (status, reply) = self.get("/state").await;
        assert_eq!(status, 200, "GET /state: {reply}");
        reply
    }

    /// `POST path` with any body and `Content-Type` (none when `None`), as a browser form or a
    /// careless script would send it: the status code and the JSON reply.
    pub async fn post_as(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let head = content_type
            .map(|t| format!("Content-Type: {t}\r\n"))
            .unwrap_or_default();
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{head}Content-Length: {}\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            parse_response(&raw)
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap_or_else(|_| panic!("POST {path}: no reply within 5 s"))
    }

    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        tokio::time::timeout(Duration::from_secs(5), self.exchange(method, path, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no reply within 5 s"))
    }

    async fn exchange(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    if body.is_empty() {
        return (status, Value::Null);
    }
    let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "reply body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, value)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&data[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        data = &data[end + 2..];
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
