#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Differential tests of the CSTA reader: every document the tests write out by hand (the
//! corpus, `csta_common::corpus`), and variants of each, decoded by the streaming reader
//! (`Message::decode`) and by the reference reader (the tree reader it replaced,
//! `csta_common::tree`), in every dialect that reads differently: the two must give the same
//! message or the same error, every time. (Generated documents are compared in
//! `csta_props.rs`.)

mod csta_common;

use std::collections::BTreeSet;

use csta_common::{corpus, tree};
use csta_router::csta::{AccodeEncoding, CallEventKind, Dialect, EscapeRoot, Message};

/// The dialects that read differently (only the account-code encoding does; the others are
/// here to show it).
fn dialects() -> Vec<Dialect> {
    let hex = Dialect {
        accode_encoding: AccodeEncoding::Hex,
        escape_root: EscapeRoot::EscapeService,
        ..Dialect::default()
    };
    vec![Dialect::default(), hex]
}

/// Both readers agree on `bytes`; the streaming reader's result.
fn agree(origin: &str, bytes: &[u8], d: &Dialect) -> Result<Message, String> {
    let new = Message::decode(bytes, d);
    let old = tree::decode(bytes, d);
    assert_eq!(
        new,
        old,
        "the readers differ on {origin} ({:?}):\n{}",
        d.accode_encoding,
        String::from_utf8_lossy(bytes)
    );
    new.map_err(|e| e.to_string())
}

#[test]
fn the_corpus_holds_every_kind_of_fixture() {
    let docs = corpus::documents();
    let mut files = BTreeSet::new();
    let mut names = BTreeSet::new();
    for doc in &docs {
        files.insert(doc.origin.split(':').next().unwrap().to_owned());
        if let Ok(m) = Message::decode(&doc.bytes, &Dialect::default()) {
            names.insert(m.name().to_owned());
        }
    }
    assert!(docs.len() > 250, "only {} documents", docs.len());
    for file in corpus::SOURCES.map(|(f, _)| f) {
        assert!(files.contains(file), "no document from {file}: {files:?}");
    }
    let mut wanted: Vec<&str> = CallEventKind::ALL.iter().map(|k| k.root()).collect();
    wanted.extend([
        "RequestSystemStatus",
        "RequestSystemStatusResponse",
        "SystemStatus",
        "SystemStatusResponse",
        "MonitorStart",
        "MonitorStartResponse",
        "MonitorStop",
        "MonitorStopResponse",
        "Escape",
        "EscapeResponse",
        "PrivateEvent",
        "CallInformationEvent",
        "AssociateData",
        "AssociateDataResponse",
        "CSTAErrorCode",
        "StartApplicationSessionPosResponse",
        "SystemRegisterResponse",
    ]);
    for name in wanted {
        assert!(
            names.contains(name),
            "no fixture reads as {name}: {names:?}"
        );
    }
}

#[test]
fn both_readers_read_every_fixture_alike() {
    let mut ok = 0;
    let mut errors = 0;
    for doc in corpus::documents() {
        for d in dialects() {
            match agree(&doc.origin, &doc.bytes, &d) {
                Ok(_) => ok += 1,
                Err(_) => errors += 1,
            }
        }
    }
    // Most fixtures are messages; some are broken on purpose.
    assert!(ok > 350 && errors > 20, "{ok} read, {errors} refused");
}

#[test]
fn both_readers_read_every_variant_alike() {
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for doc in corpus::documents() {
        for (i, variant) in corpus::variants(&doc.bytes, 24).into_iter().enumerate() {
            for d in dialects() {
                let result = agree(&format!("{} variant {i}", doc.origin), &variant, &d);
                seen.insert(match result {
                    Ok(m) => format!("ok {}", m.name()),
                    Err(e) => e.split(':').next().unwrap_or_default().to_owned(),
                });
                count += 1;
            }
        }
    }
    assert!(count > 10_000, "{count} variants");
    // The variants reach both readers' refusals, not only their successes.
    for expected in [
        "the XML document is not well-formed",
        "the XML document has no root element",
        "ok DeliveredEvent",
    ] {
        assert!(seen.contains(expected), "{expected:?} never seen: {seen:?}");
    }
}

#[test]
fn the_literal_reader_reads_literals_as_the_compiler_does() {
    let source = r####"let a = "x\"<y>\n"; let b = br#"<a href="q">"#; let c = 'x'; let d = '\''; let e = concat!("<a>", r"<b/>", "</a>"); let f = "line\
        continued"; let g = b"\x00\x01<"; let h = '"';"####;
    let got: Vec<Vec<u8>> = corpus::literals(source)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        got,
        vec![
            b"x\"<y>\n".to_vec(),
            br#"<a href="q">"#.to_vec(),
            b"<a><b/></a>".to_vec(),
            b"linecontinued".to_vec(),
            b"\x00\x01<".to_vec(),
        ]
    );
}
