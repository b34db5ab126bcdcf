//! A small HTTP/1.1 JSON client for the simulators' control API (one request per connection,
//! `Connection: close`), so the benchmark needs no HTTP crate.

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one control request may take (a large burst takes a while).
const TIMEOUT: Duration = Duration::from_secs(120);

/// `POST path` with a JSON body to the control API at `addr`; the JSON reply of a 200, or an
/// error naming the request and what the simulator said.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Value, String> {
    let exchange = async {
        let body = body.to_string();
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the control API at {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let (status, reply) = parse_response(&raw).ok_or_else(|| {
            format!(
                "POST {path}: not an HTTP response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        })?;
        if status != 200 {
            return Err(format!("POST {path} {body}: HTTP {status}: {reply}"));
        }
        Ok(reply)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("POST {path}: no answer within {} s", TIMEOUT.as_secs()))?
}

/// The status code and the JSON body (`Null` when empty or not JSON) of a complete response.
fn parse_response(raw: &[u8]) -> Option<(u16, Value)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some((status, value))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_chunked() {
        let (s, v) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!((s, v["a"].as_u64()), (200, Some(1)));
        let (s, v) = parse_response(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, v["a"].as_u64()), (409, Some(2)));
    }
}
