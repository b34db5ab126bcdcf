//! The simulator's control API for tests, over the benchmark's HTTP client (`http`, which every
//! test file including this one includes too). Every POST says `Content-Type:
//! application/json`, as the control API requires; `post_as` sends anything else, to test the
//! refusal. A reply that does not come within 5 s, or is not JSON, fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::http;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a control request may take unless the test says otherwise.
const WITHIN: Duration = Duration::from_secs(5);

/// The control API of one simulator.
#[derive(Debug, Clone, Copy)]
pub struct SimControl {
    /// Where the control API listens.
    pub addr: SocketAddr,
}

impl SimControl {
    /// `GET path`: the status code and the JSON body (`Null` when empty).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_and_json(http::get(self.addr, path, WITHIN).await)
    }

    /// `POST path` with a JSON body: the status code and the JSON reply.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_within(path, body, WITHIN).await
    }

    /// [`SimControl::post`] for a request that takes longer than 5 s (a large burst).
    pub async fn post_within(&self, path: &str, body: Value, within: Duration) -> (u16, Value) {
        status_and_json(http::post_json(self.addr, path, &body, within).await)
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
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("Content-Type", t))
            .into_iter()
            .collect();
        status_and_json(
            http::request(self.addr, "POST", path, &headers, body.as_bytes(), WITHIN).await,
        )
    }
}

fn status_and_json(response: Result<http::Response, String>) -> (u16, Value) {
    let response = response.unwrap_or_else(|e| panic!("{e}"));
    let body = response.json().unwrap_or_else(|e| panic!("{e}"));
    (response.status, body)
}
