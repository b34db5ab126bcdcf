//! A small, tolerant XML tree for reading CSTA messages, and a strict writer for sending them.
//!
//! Reading: a CSTA message is at most 64 KiB, so it is parsed into a tiny tree of elements named
//! by their *local* name (prefix and namespace dropped). That is what makes the reader tolerant of
//! every ECMA-323 edition (ed2–ed6) and of whatever prefix a switch likes: the namespace is
//! never compared. Attributes are ignored (CSTA carries no data in attributes), once checked to
//! be well-formed. Depth is limited, so hostile input cannot exhaust the stack.
//!
//! Writing: [`XmlWriter`] produces compact documents (an XML declaration, then elements with no
//! whitespace between them) with text escaped.

use quick_xml::events::Event;
use quick_xml::Reader;

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

/// One element: its local name, its child elements and its text (concatenated, trimmed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The local name (no prefix).
    pub name: String,
    /// Child elements, in document order.
    pub children: Vec<Element>,
    /// The element's own text content, trimmed of surrounding whitespace.
    pub text: String,
}

impl Element {
    /// Parse a document into its root element.
    pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmlError::Malformed(e.to_string()))?;
            match event {
                Event::Start(start) => {
                    check_attributes(&start)?;
                    if root.is_some() {
                        return Err(XmlError::Malformed("content after the root element".into()));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    stack.push(Element {
                        name: start.local_name().as_ref().to_owned(),
                        ..Element::default()
                    });
                }
                Event::Empty(start) => {
                    check_attributes(&start)?;
                    if root.is_some() {
                        return Err(XmlError::Malformed("content after the root element".into()));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    let element = Element {
                        name: start.local_name().as_ref().to_owned(),
                        ..Element::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::End(_) => {
                    let mut element = stack
                        .pop()
                        .ok_or_else(|| XmlError::Malformed("unexpected end tag".into()))?;
                    let trimmed = element.text.trim();
                    if trimmed.len() != element.text.len() {
                        element.text = trimmed.to_owned();
                    }
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::Text(t) => {
                    let s = t.xml10_content();
                    match stack.last_mut() {
                        Some(top) => top.text.push_str(&s),
                        None if s.trim().is_empty() => {}
                        None => {
                            return Err(XmlError::Malformed("text outside the root element".into()))
                        }
                    }
                }
                Event::CData(c) => {
                    let s = c.xml10_content();
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(ch)) => ch.to_string(),
                        _ => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .map(str::to_owned)
                                .ok_or_else(|| {
                                    XmlError::Malformed(format!("unknown entity &{name};"))
                                })?
                        }
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&resolved);
                    }
                }
                Event::Eof => break,
                // Declarations, comments, processing instructions, DOCTYPE: nothing to read.
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err(XmlError::Malformed(
                "the document ends inside an element".into(),
            ));
        }
        root.ok_or(XmlError::Empty)
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Follow a path of local names from this element.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        let mut at = self;
        for name in names {
            at = at.child(name)?;
        }
        Some(at)
    }

    /// The first element with this local name at any depth below this one (breadth-first).
    pub fn find(&self, name: &str) -> Option<&Element> {
        let mut queue: std::collections::VecDeque<&Element> = self.children.iter().collect();
        while let Some(e) = queue.pop_front() {
            if e.name == name {
                return Some(e);
            }
            queue.extend(e.children.iter());
        }
        None
    }

    /// This element's value, tolerant of wrappers: its own text when it has any, else the
    /// value of its first child that has one. So `<device>5001</device>` and
    /// `<device><deviceIdentifier>5001</deviceIdentifier></device>` both read as `5001`.
    pub fn value(&self) -> Option<&str> {
        if !self.text.is_empty() {
            return Some(&self.text);
        }
        self.children.iter().find_map(Element::value)
    }

    /// The value of the child with this local name, if present and not empty.
    pub fn child_value(&self, name: &str) -> Option<&str> {
        self.child(name).and_then(Element::value)
    }
}

/// Attributes carry nothing we read, but a document whose attributes are not well-formed
/// (`a="1"b="2"`, a duplicate, a missing quote) is not XML, and is refused like any other.
fn check_attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<(), XmlError> {
    for attribute in start.attributes() {
        attribute.map_err(|e| XmlError::Malformed(e.to_string()))?;
    }
    // The parser above does not insist on whitespace between attributes: XML does.
    let raw = start.attributes_raw().as_bytes();
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

/// Builds a compact XML document: `<?xml version="1.0" encoding="UTF-8"?>` followed by the
/// elements with no whitespace between them.
#[derive(Debug)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// A document whose root element is `root` in namespace `ns`; children follow with
    /// [`open`](Self::open), [`leaf`](Self::leaf) and friends, and [`finish`](Self::finish)
    /// closes the root.
    pub fn new(root: &str, ns: &str) -> XmlWriter {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><");
        out.push_str(root);
        push_default_ns(&mut out, ns);
        out.push('>');
        XmlWriter { out }
    }

    /// Open a child element.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Open a child element that declares a default namespace.
    pub fn open_ns(&mut self, name: &str, ns: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        escape_into(&mut self.out, ns);
        self.out.push_str("\">");
        self
    }

    /// Close a child element.
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>text</name>`, with the text escaped.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name)
    }

    /// `<name>text</name>` when there is a text, nothing otherwise.
    pub fn opt_leaf(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(name, t);
        }
        self
    }

    /// Close the root and return the document.
    pub fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.out
    }

    /// Finish a document whose root has no children as `<Root xmlns="…"/>`.
    pub fn empty(root: &str, ns: &str) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><");
        out.push_str(root);
        push_default_ns(&mut out, ns);
        out.push_str("/>");
        out
    }
}

/// ` xmlns="ns"` on a root element; nothing for `""` (`csta-namespace = ""`: switches such as
/// Zultys MX write and expect no namespace at all).
fn push_default_ns(out: &mut String, ns: &str) {
    if !ns.is_empty() {
        out.push_str(" xmlns=\"");
        escape_into(out, ns);
        out.push('"');
    }
}

/// Append `text` to `out`, escaping the five XML special characters.
pub fn escape_into(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A literal CR would be read back as LF (XML end-of-line handling).
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_names_whatever_the_prefix() {
        let doc = br#"<?xml version="1.0"?><csta:A xmlns:csta="urn:x"><csta:b> 1 &amp; 2 </csta:b><c/></csta:A>"#;
        let root = Element::parse(doc).unwrap();
        assert_eq!(root.name, "A");
        assert_eq!(root.child_value("b"), Some("1 & 2"));
        assert!(root.child("c").is_some());
    }

    #[test]
    fn refuses_broken_documents() {
        assert!(Element::parse(b"<a><b></a>").is_err());
        assert!(Element::parse(b"<a>").is_err());
        // Attributes with no space between them, or twice the same.
        assert!(Element::parse(br#"<a><b x="1"y="2">3</b></a>"#).is_err());
        assert!(Element::parse(br#"<a x="1" x="2"/>"#).is_err());
        assert!(Element::parse(br#"<a x="1" y='2'>3</a>"#).is_ok());
        assert_eq!(Element::parse(b""), Err(XmlError::Empty));
        assert_eq!(Element::parse(&[0xff, 0xfe]), Err(XmlError::NotUtf8));
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(Element::parse(deep.as_bytes()), Err(XmlError::TooDeep));
    }

    #[test]
    fn value_looks_through_wrappers() {
        let root =
            Element::parse(b"<e><device><deviceIdentifier>5001</deviceIdentifier></device></e>")
                .unwrap();
        assert_eq!(root.child_value("device"), Some("5001"));
    }
}
