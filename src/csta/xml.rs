//! What the CSTA reader refuses, and a strict writer for sending CSTA.
//!
//! Reading (the streaming reader behind [`Message::decode`](super::Message::decode)): a CSTA message is read by the *local* names of its elements
//! (prefix and namespace dropped). That is what makes the reader tolerant of every ECMA-323
//! edition (ed2–ed6) and of whatever prefix a switch likes: the namespace is never compared.
//! Attributes are ignored (CSTA carries no data in attributes), once checked to be
//! well-formed. Depth is limited, so hostile input cannot exhaust the stack. [`XmlError`] says
//! why a document was refused.
//!
//! Writing: [`XmlWriter`] produces compact documents (an XML declaration, then elements with no
//! whitespace between them) with text escaped, into a caller's buffer ([`XmlOut`]).

/// How deep elements may nest before a document is refused. Real CSTA messages stay under 10.
pub const MAX_DEPTH: usize = 32;

/// Why an XML document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// The bytes are not UTF-8.
    #[error("the XML document is not valid UTF-8")]
    NotUtf8,
    /// The document is not well-formed.
    #[error("the XML document is not well-formed: {0}")]
    Malformed(String),
    /// The document has no root element.
    #[error("the XML document has no root element")]
    Empty,
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("the XML document nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Attributes carry nothing we read, but a document whose attributes are not well-formed
/// (`a="1"b="2"`, a duplicate, a missing quote) is not XML, and is refused like any other.
pub(crate) fn check_attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<(), XmlError> {
    // Most elements have no attribute at all: nothing to check (and no iterator to build).
    let raw = start.attributes_raw().as_bytes();
    if raw
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return Ok(());
    }
    for attribute in start.attributes() {
        attribute.map_err(|e| XmlError::Malformed(e.to_string()))?;
    }
    // The parser above does not insist on whitespace between attributes: XML does.
    let mut quote: Option<u8> = None;
    for (i, &b) in raw.iter().enumerate() {
        match quote {
            Some(q) if b == q => {
                quote = None;
                let next = raw.get(i + 1).copied();
                if !matches!(next, None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'/')) {
                    return Err(XmlError::Malformed(
                        "no whitespace between two attributes".into(),
                    ));
                }
            }
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None => {}
        }
    }
    Ok(())
}

/// Where a document is written: a `String`, or straight into a connection's write buffer
/// (`BytesMut`), so that a link can reuse one buffer for every frame it sends.
pub trait XmlOut {
    /// Append text (already escaped where it must be).
    fn push_str(&mut self, s: &str);
}

impl XmlOut for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
}

impl XmlOut for bytes::BytesMut {
    fn push_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Builds a compact XML document: `<?xml version="1.0" encoding="UTF-8"?>` followed by the
/// elements with no whitespace between them, appended to a caller's buffer.
#[derive(Debug)]
pub struct XmlWriter<'o, O: XmlOut + ?Sized = String> {
    out: &'o mut O,
}

impl<'o, O: XmlOut + ?Sized> XmlWriter<'o, O> {
    /// A document whose root element is `root` in namespace `ns`, appended to `out`; children
    /// follow with [`open`](Self::open), [`leaf`](Self::leaf) and friends, and
    /// [`finish`](Self::finish) closes the root.
    pub fn new(out: &'o mut O, root: &str, ns: &str) -> XmlWriter<'o, O> {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><");
        out.push_str(root);
        push_default_ns(out, ns);
        out.push_str(">");
        XmlWriter { out }
    }

    /// Open a child element.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push_str("<");
        self.out.push_str(name);
        self.out.push_str(">");
        self
    }

    /// Open a child element that declares a default namespace.
    pub fn open_ns(&mut self, name: &str, ns: &str) -> &mut Self {
        self.out.push_str("<");
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        escape_into(self.out, ns);
        self.out.push_str("\">");
        self
    }

    /// Close a child element.
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">");
        self
    }

    /// Text inside the element opened last, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(self.out, text);
        self
    }

    /// Text already fit for XML (nothing in it to escape), as is.
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.out.push_str(text);
        self
    }

    /// `<name>text</name>`, with the text escaped.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        escape_into(self.out, text);
        self.close(name)
    }

    /// `<name>text</name>` when there is a text, nothing otherwise.
    pub fn opt_leaf(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(name, t);
        }
        self
    }

    /// `<name>n</name>`, a number written without an intermediate string.
    pub fn number(&mut self, name: &str, n: u32) -> &mut Self {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut v = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.open(name);
        // ASCII digits only.
        if let Ok(s) = std::str::from_utf8(&digits[at..]) {
            self.out.push_str(s);
        }
        self.close(name)
    }

    /// Close the root: the document is complete in the buffer.
    pub fn finish(self, root: &str) {
        self.out.push_str("</");
        self.out.push_str(root);
        self.out.push_str(">");
    }

    /// A document whose root has no children, `<Root xmlns="…"/>`, appended to `out`.
    pub fn empty(out: &mut O, root: &str, ns: &str) {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><");
        out.push_str(root);
        push_default_ns(out, ns);
        out.push_str("/>");
    }
}

/// ` xmlns="ns"` on a root element; nothing for `""` (`csta-namespace = ""`: switches such as
/// Zultys MX write and expect no namespace at all).
fn push_default_ns<O: XmlOut + ?Sized>(out: &mut O, ns: &str) {
    if !ns.is_empty() {
        out.push_str(" xmlns=\"");
        escape_into(out, ns);
        out.push_str("\"");
    }
}

/// Append `text` to `out`, escaping the five XML special characters (and CR); runs of text
/// with nothing to escape are appended in one piece.
pub fn escape_into<O: XmlOut + ?Sized>(out: &mut O, text: &str) {
    let mut from = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            // A literal CR would be read back as LF (XML end-of-line handling).
            b'\r' => "&#xD;",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&text[from..i]);
        out.push_str(escaped);
        from = i + 1;
    }
    out.push_str(&text[from..]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_special_characters_in_runs() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"c'\rd");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&apos;&#xD;d");
        let mut bytes = bytes::BytesMut::new();
        escape_into(&mut bytes, "Zürich & co");
        assert_eq!(&bytes[..], "Zürich &amp; co".as_bytes());
    }

    #[test]
    fn writes_numbers_and_appends_to_the_buffer() {
        let mut out = String::from("kept:");
        let mut w = XmlWriter::new(&mut out, "R", "");
        w.number("n", 0).number("m", 4_294_967_295);
        w.finish("R");
        assert_eq!(
            out,
            r#"kept:<?xml version="1.0" encoding="UTF-8"?><R><n>0</n><m>4294967295</m></R>"#
        );
    }
}
