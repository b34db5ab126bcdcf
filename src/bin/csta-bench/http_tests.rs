//! The unit tests of [`super::http`], beside it rather than in it: the tests under `tests/`
//! include `http.rs` and need not run these again.
#![allow(clippy::unwrap_used)]

use super::http::*;
use serde_json::Value;

#[test]
fn reads_plain_and_chunked_bodies_and_headers() {
    let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nX-A: b c\r\n\r\n{\"a\":1}\n").unwrap();
    assert_eq!((r.status, r.json().unwrap()["a"].as_u64()), (200, Some(1)));
    assert_eq!(r.header("x-a"), Some("b c"));
    assert_eq!(r.header("Content-Length"), Some("8"));
    let r = parse(
        b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (409, "{\"a\":2}"));
    assert!(r.ok_json("POST /x").unwrap_err().contains("HTTP 409"));
    let empty = parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert_eq!(empty.json().unwrap(), Value::Null);
}

#[test]
fn refuses_what_is_not_http_or_cut_short() {
    assert!(parse(b"SSH-2.0-x\r\n").is_err());
    assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc").is_err());
    let r = parse(b"HTTP/1.1 200 OK\r\n\r\nnot json").unwrap();
    assert!(r.json().unwrap_err().contains("not JSON"));
}
