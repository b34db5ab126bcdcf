//! Log output of the binaries (`csta-router`, `pbx-sim`): where logs go, in which shape, and
//! which targets are shown when `RUST_LOG` is not set.
//!
//! Logs go to stderr (stdout carries the one machine-readable line each binary prints). Colours
//! are used only when stderr is a terminal, so files and journald get plain text. `json` writes
//! one JSON object per line for log shippers. Without `RUST_LOG`, our own code logs at INFO
//! (with the `audit` and `csta_wire` targets, which `wire-trace` and the audit trail rely on)
//! and every other crate at WARN, so that a dependency's chatter does not drown the router's.
//!
//! A cluster node names itself on every line once [`set_node`] has been called (right after
//! the configuration is read): `node=<name>` after the timestamp of a text line, a top-level
//! `"node"` key in a JSON line. Several nodes usually log to one place (a journal, a log
//! shipper, one terminal on a test machine), and a line about a switch means little without
//! the node that wrote it.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The filter used when `RUST_LOG` is not set (or cannot be read): our crate and the `audit`
/// and `csta_wire` targets at INFO, everything else at WARN.
pub const DEFAULT_FILTER: &str = "warn,csta_router=info,audit=info,csta_wire=info";

/// The shape of log lines: text for people, JSON for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and `node` on a cluster node.
    Json,
}

/// Install the global subscriber writing to stderr. `extra_default` adds directives to
/// [`DEFAULT_FILTER`] (e.g. `"pbx_sim=info"` for that binary's own target). An unreadable
/// `RUST_LOG` is reported once on stderr and the default is used instead, so a typo in the
/// variable never silences the router.
pub fn init(format: LogFormat, extra_default: &str) {
    let default = if extra_default.is_empty() {
        DEFAULT_FILTER.to_owned()
    } else {
        format!("{DEFAULT_FILTER},{extra_default}")
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&value) {
                Ok(filter) => filter,
                Err(e) => {
                    eprintln!(
                        "RUST_LOG={value:?} cannot be read ({e}); logging with the default {default:?}"
                    );
                    tracing_subscriber::EnvFilter::new(&default)
                }
            }
        }
        _ => tracing_subscriber::EnvFilter::new(&default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_timer(NodeTimer::new(SystemTime, &NODE))
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .event_format(NodeJson::new(format::Format::default().json(), &NODE))
            .init(),
    }
}

/// The node name of this process, once set.
static NODE: OnceLock<Node> = OnceLock::new();

/// Name this process's node on every log line from now on (lines already written keep their
/// shape). Called once the configuration has been read, in cluster mode only: a router
/// without `[cluster]` writes the lines it always wrote. A process is one node: the first
/// name stays; `false` when another name was set before.
pub fn set_node(name: &str) -> bool {
    let node = NODE.get_or_init(|| Node::new(name));
    node.name.as_ref() == name
}

/// The node name set by [`set_node`], if any.
pub fn node() -> Option<&'static str> {
    NODE.get().map(|n| n.name.as_ref())
}

/// A node name as log lines write it, prepared once rather than on every line.
#[derive(Debug)]
pub struct Node {
    /// The name.
    name: Box<str>,
    /// In a text line: the name, quoted when it holds anything but letters, digits, `.`, `_`
    /// and `-` (so that the line still splits into `key=value` words).
    text: Box<str>,
    /// In a JSON line: the name as a JSON string.
    json: Box<str>,
}

impl Node {
    /// The written forms of `name`.
    pub fn new(name: &str) -> Node {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let text = if plain {
            name.to_owned()
        } else {
            format!("{name:?}")
        };
        let json = serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".to_owned());
        Node {
            name: name.into(),
            text: text.into(),
            json: json.into(),
        }
    }
}

/// The timestamp of a text line followed by ` node=<name>` once the node is named: where a
/// syslog line has its host name, and inside the timestamp's dimmed style on a terminal (a
/// timer rather than a whole formatter, so the standard text format, colours included, is
/// kept as it is).
#[derive(Debug)]
pub struct NodeTimer<T> {
    inner: T,
    node: &'static OnceLock<Node>,
}

impl<T> NodeTimer<T> {
    /// `inner`'s timestamps, followed by the name in `node` once it is set.
    pub fn new(inner: T, node: &'static OnceLock<Node>) -> NodeTimer<T> {
        NodeTimer { inner, node }
    }
}

impl<T: FormatTime> FormatTime for NodeTimer<T> {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        self.inner.format_time(w)?;
        match self.node.get() {
            Some(node) => write!(w, " node={}", node.text),
            None => Ok(()),
        }
    }
}

/// A JSON line with a top-level `"node"` key once the node is named (the line of the inner
/// format, with the key added before its closing brace).
#[derive(Debug)]
pub struct NodeJson<F> {
    inner: F,
    node: &'static OnceLock<Node>,
}

impl<F> NodeJson<F> {
    /// `inner`'s lines, with the name in `node` once it is set.
    pub fn new(inner: F, node: &'static OnceLock<Node>) -> NodeJson<F> {
        NodeJson { inner, node }
    }
}

impl<S, N, F> FormatEvent<S, N> for NodeJson<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some(node) = self.node.get() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.rfind('}') {
            Some(end) if line.starts_with('{') => {
                let (head, tail) = line.split_at(end);
                let comma = if head.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                write!(writer, "{head}{comma}\"node\":{}{tail}", node.json)
            }
            // Not an object: written as it is rather than broken.
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The same two events, the second inside a span, as the router logs them.
    fn log_two_lines() {
        tracing::info!(target: "csta_router::cluster", switch = "sw1", reason = "failover", "took ownership");
        let span = tracing::info_span!("link", switch = "sw2");
        let _entered = span.enter();
        tracing::warn!(target: "csta_router::link", "connect failed");
    }

    /// Text lines as `init` writes them (without colours), with this node source.
    fn text_lines(node: &'static OnceLock<Node>) -> String {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_timer(NodeTimer::new(SystemTime, node))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, log_two_lines);
        lines.text()
    }

    /// JSON lines as `init` writes them, with this node source.
    fn json_lines(node: &'static OnceLock<Node>) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .json()
            .with_ansi(false)
            .event_format(NodeJson::new(format::Format::default().json(), node))
            .finish();
        tracing::subscriber::with_default(subscriber, log_two_lines);
        lines
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// A line without its timestamp (the first word).
    fn after_timestamp(line: &str) -> &str {
        line.split_once(' ').unwrap().1
    }

    #[test]
    fn a_text_line_names_the_node_after_its_timestamp() {
        static NAMED: OnceLock<Node> = OnceLock::new();
        static UNNAMED: OnceLock<Node> = OnceLock::new();
        NAMED.set(Node::new("node-a")).unwrap();
        let named = text_lines(&NAMED);
        let plain = text_lines(&UNNAMED);
        let (named, plain): (Vec<&str>, Vec<&str>) =
            (named.lines().collect(), plain.lines().collect());
        assert_eq!(named.len(), 2, "{named:?}");
        assert_eq!(
            after_timestamp(named[0]),
            "node=node-a  INFO csta_router::cluster: took ownership switch=\"sw1\" reason=\"failover\""
        );
        assert_eq!(
            after_timestamp(named[1]),
            "node=node-a  WARN link{switch=\"sw2\"}: csta_router::link: connect failed"
        );
        assert!(
            named[0].split(' ').next().unwrap().ends_with('Z'),
            "{}",
            named[0]
        );
        // Unnamed (a router without [cluster]): the standard line, nothing added.
        assert_eq!(plain.len(), 2);
        for (n, p) in named.iter().zip(&plain) {
            assert!(!p.contains("node="), "{p}");
            assert_eq!(
                after_timestamp(n).strip_prefix("node=node-a").unwrap(),
                format!(" {}", after_timestamp(p))
            );
        }
    }

    #[test]
    fn a_json_line_has_a_top_level_node_key() {
        static NAMED: OnceLock<Node> = OnceLock::new();
        static UNNAMED: OnceLock<Node> = OnceLock::new();
        NAMED.set(Node::new("node-a")).unwrap();
        let named = json_lines(&NAMED);
        let plain = json_lines(&UNNAMED);
        assert_eq!(named.len(), 2);
        assert_eq!(plain.len(), 2);
        for (mut n, mut p) in named.into_iter().zip(plain) {
            assert_eq!(n["node"], "node-a", "{n}");
            assert!(p.get("node").is_none(), "{p}");
            // Otherwise the same object (timestamps aside).
            let n = n.as_object_mut().unwrap();
            let p = p.as_object_mut().unwrap();
            n.remove("node");
            assert!(n.remove("timestamp").is_some() && p.remove("timestamp").is_some());
            assert_eq!(n, p);
        }
    }

    #[test]
    fn a_node_name_that_is_not_one_word_is_quoted() {
        static NAMED: OnceLock<Node> = OnceLock::new();
        NAMED.set(Node::new("rack 4 \"b\"")).unwrap();
        let text = text_lines(&NAMED);
        assert!(
            text.lines()
                .all(|l| after_timestamp(l).starts_with("node=\"rack 4 \\\"b\\\"\"  ")),
            "{text}"
        );
        let json = json_lines(&NAMED);
        assert!(json.iter().all(|l| l["node"] == "rack 4 \"b\""), "{json:?}");
        assert_eq!(&*Node::new("a.b_c-1").text, "a.b_c-1");
        assert_eq!(&*Node::new("").text, "\"\"");
    }

    #[test]
    fn set_node_keeps_the_first_name() {
        // The process-wide name (no subscriber of this test process uses it).
        assert!(set_node("first"));
        assert!(set_node("first"));
        assert!(!set_node("second"));
        assert_eq!(node(), Some("first"));
    }
}
