//! The streaming reader: one pass of XML events over a frame's bytes that hands the message
//! decoders only the fields they ask for, with no tree and no allocation per element.
//!
//! A CSTA message is read for a handful of values (a cross-reference, a call ID, two devices),
//! so building a tree of every element first, with a `String` per name and a `Vec` per child
//! list, costs more than the reading itself. Here a decoder names its fields as paths of local
//! names from the root ([`Query`]); the scan follows the events once, and each value is a slice
//! of the frame (`&str`), copied only when the text had to be assembled (an entity such as
//! `&amp;`, CDATA, text split around child elements).
//!
//! The tolerance is exactly the one the module doc of [`super::xml`] promises: local names only
//! (prefix and namespace never compared), attributes checked to be well-formed but not read,
//! depth limited to [`MAX_DEPTH`], whitespace around a text trimmed, and a value read through
//! wrappers (an element's own text, else the first value found among its children, in
//! document order). A path step matches the *first* child of that name only, and a value is
//! the first element's even when it is empty, as the message decoders have always read.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::xml::{check_attributes, XmlError, MAX_DEPTH};

/// One step of a path: which child of the element reached so far is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// The first child with this local name.
    Name(&'static str),
    /// The first child, whatever its name.
    Any,
    /// The first child whose local name is one of these.
    OneOf(&'static [&'static str]),
}

impl Step {
    /// The name this step matched, if it matches `name` (`""` for [`Step::Any`]).
    fn matches(self, name: &str) -> Option<&'static str> {
        match self {
            Step::Name(n) => (n == name).then_some(n),
            Step::Any => Some(""),
            Step::OneOf(names) => names.iter().copied().find(|n| *n == name),
        }
    }
}

/// The longest path a decoder asks for.
const MAX_PATH: usize = 5;

/// No depth: a query that waits for nothing.
const NEVER: usize = usize::MAX;

/// One field a decoder wants: the value of the element at the end of a path of first
/// children, from an anchor (the root, or an item of a list).
#[derive(Debug, Clone)]
pub(crate) struct Query<'a> {
    steps: [Step; MAX_PATH],
    len: usize,
    /// Steps matched so far (the scan is inside those elements, or was).
    matched: usize,
    /// The depth at which the next step may match ([`NEVER`] once the path is found or can
    /// no longer be).
    open_at: usize,
    /// The depth of the last matched element, whose end settles the query.
    close_at: usize,
    /// The name the last step matched, once it did.
    hit: Option<&'static str>,
    /// The value of the element at the end of the path, once it closed.
    value: Option<Cow<'a, str>>,
}

impl<'a> Query<'a> {
    /// A query of this path from the root (at most [`MAX_PATH`] steps; an empty path never
    /// matches).
    pub(crate) fn new(path: &[Step]) -> Query<'a> {
        let mut steps = [Step::Any; MAX_PATH];
        let len = path.len().min(MAX_PATH);
        steps[..len].copy_from_slice(&path[..len]);
        let mut q = Query {
            steps,
            len,
            matched: 0,
            open_at: NEVER,
            close_at: NEVER,
            hit: None,
            value: None,
        };
        q.reset(1);
        q
    }

    /// A query of one child's name.
    pub(crate) fn child(name: &'static str) -> Query<'a> {
        Query::new(&[Step::Name(name)])
    }

    /// Start again from an anchor at depth `base` (the next item of a list).
    fn reset(&mut self, base: usize) {
        self.matched = 0;
        self.open_at = if self.len == 0 { NEVER } else { base + 1 };
        self.close_at = NEVER;
        self.hit = None;
        self.value = None;
    }

    /// An element `name` opened at `depth`.
    fn open(&mut self, depth: usize, name: &str) {
        if depth != self.open_at {
            return;
        }
        if let Some(hit) = self.steps[self.matched].matches(name) {
            self.matched += 1;
            self.close_at = depth;
            if self.matched == self.len {
                self.hit = Some(hit);
                self.open_at = NEVER;
            } else {
                self.open_at = depth + 1;
            }
        }
    }

    /// The element at `depth` closed with `value`: when it is the last matched one, the
    /// query is settled (a later element of the same name is not the first).
    fn close(&mut self, depth: usize, value: &Option<Cow<'a, str>>) {
        if depth != self.close_at {
            return;
        }
        if self.matched == self.len {
            self.value = value.clone();
        }
        self.open_at = NEVER;
        self.close_at = NEVER;
    }

    /// Whether the query is settled.
    fn done(&self) -> bool {
        self.open_at == NEVER && self.close_at == NEVER
    }

    /// Whether the first `steps` steps of the path were found (the elements exist).
    pub(crate) fn reached(&self, steps: usize) -> bool {
        self.len > 0 && self.matched >= steps
    }

    /// The name the last step matched, when the whole path was found.
    pub(crate) fn hit(&self) -> Option<&'static str> {
        self.hit
    }

    /// The value, borrowed.
    pub(crate) fn get(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The value, owned.
    pub(crate) fn take(&mut self) -> Option<String> {
        self.value.take().map(Cow::into_owned)
    }
}

/// What a decoder is told while the scan runs. Depths count from the root (1).
pub(crate) trait Fields<'a> {
    /// An element opened.
    fn open(&mut self, depth: usize, name: &str);
    /// The element at `depth` closed; `value` is its value (own text, else a child's).
    fn close(&mut self, depth: usize, value: &Option<Cow<'a, str>>);
}

/// A decoder that wants no field.
impl<'a> Fields<'a> for () {
    fn open(&mut self, _: usize, _: &str) {}
    fn close(&mut self, _: usize, _: &Option<Cow<'a, str>>) {}
}

/// A fixed set of queries from the root.
impl<'a, const N: usize> Fields<'a> for [Query<'a>; N] {
    fn open(&mut self, depth: usize, name: &str) {
        for q in self.iter_mut() {
            q.open(depth, name);
        }
    }
    fn close(&mut self, depth: usize, value: &Option<Cow<'a, str>>) {
        for q in self.iter_mut() {
            q.close(depth, value);
        }
    }
}

/// Queries anchored at each item of a list: the children named `item` of the first element
/// named `container` under the root. `on_item` receives the queries of each item as it closes.
pub(crate) struct List<'a, const N: usize, F> {
    container: Query<'a>,
    item: &'static str,
    in_item: bool,
    /// The item's queries.
    pub(crate) queries: [Query<'a>; N],
    on_item: F,
}

impl<'a, const N: usize, F: FnMut(&mut [Query<'a>; N])> List<'a, N, F> {
    /// The list of `item`s in `container`.
    pub(crate) fn new(
        container: &'static str,
        item: &'static str,
        queries: [Query<'a>; N],
        on_item: F,
    ) -> Self {
        List {
            container: Query::child(container),
            item,
            in_item: false,
            queries,
            on_item,
        }
    }

    fn inside(&self) -> bool {
        self.container.reached(1) && !self.container.done()
    }
}

impl<'a, const N: usize, F: FnMut(&mut [Query<'a>; N])> Fields<'a> for List<'a, N, F> {
    fn open(&mut self, depth: usize, name: &str) {
        if self.in_item {
            for q in self.queries.iter_mut() {
                q.open(depth, name);
            }
        } else if self.inside() && depth == 3 && name == self.item {
            self.in_item = true;
            self.queries.iter_mut().for_each(|q| q.reset(3));
        }
        self.container.open(depth, name);
    }
    fn close(&mut self, depth: usize, value: &Option<Cow<'a, str>>) {
        if self.in_item {
            if depth == 3 {
                self.in_item = false;
                (self.on_item)(&mut self.queries);
            } else {
                for q in self.queries.iter_mut() {
                    q.close(depth, value);
                }
            }
        }
        self.container.close(depth, value);
    }
}

/// Two decoders' fields at once.
impl<'a, A: Fields<'a>, B: Fields<'a>> Fields<'a> for (A, B) {
    fn open(&mut self, depth: usize, name: &str) {
        self.0.open(depth, name);
        self.1.open(depth, name);
    }
    fn close(&mut self, depth: usize, value: &Option<Cow<'a, str>>) {
        self.0.close(depth, value);
        self.1.close(depth, value);
    }
}

/// The text and first child value of one open element.
#[derive(Debug, Default)]
struct Slot<'a> {
    /// The element's own text so far, untrimmed.
    own: Cow<'a, str>,
    /// The value of its first child that had one.
    child: Option<Cow<'a, str>>,
}

impl<'a> Slot<'a> {
    /// Append a piece of text. Whitespace-only text before the first other piece is dropped
    /// (it would be trimmed), so a pretty-printed element costs no copy.
    fn push(&mut self, piece: Cow<'a, str>) {
        if piece.is_empty() {
            return;
        }
        if self.own.trim().is_empty() {
            self.own = piece;
        } else {
            self.own.to_mut().push_str(&piece);
        }
    }

    /// The element's value: its trimmed own text when not empty, else its first child's.
    fn value(&mut self) -> Option<Cow<'a, str>> {
        let own = match std::mem::take(&mut self.own) {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        };
        if own.is_empty() {
            self.child.take()
        } else {
            Some(own)
        }
    }
}

/// One pass over a document.
pub(crate) struct Scan<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    depth: usize,
    root_closed: bool,
    slots: [Slot<'a>; MAX_DEPTH + 1],
}

/// What one event did.
enum Progress<'a> {
    Continue,
    /// The root element opened (its local name).
    Root(Cow<'a, str>),
    Eof,
}

impl<'a> Scan<'a> {
    /// A scan of `bytes`, which must be UTF-8.
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Scan<'a>, XmlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Ok(Scan {
            text,
            reader,
            depth: 0,
            root_closed: false,
            slots: std::array::from_fn(|_| Slot::default()),
        })
    }

    /// Read up to the root element's start: its local name. A document without a root is an
    /// error ([`XmlError::Empty`], or whatever broke it first).
    pub(crate) fn root(&mut self) -> Result<Cow<'a, str>, XmlError> {
        loop {
            match self.event(&mut ())? {
                Progress::Continue => {}
                Progress::Root(name) => return Ok(name),
                Progress::Eof => return Err(XmlError::Empty),
            }
        }
    }

    /// Read the rest of the document, telling `fields` about every element.
    pub(crate) fn finish<F: Fields<'a>>(&mut self, fields: &mut F) -> Result<(), XmlError> {
        loop {
            if let Progress::Eof = self.event(fields)? {
                return Ok(());
            }
        }
    }

    /// The local name of a start tag, borrowed from the document when it can be.
    fn local_name(&self, start: &BytesStart<'_>) -> Cow<'a, str> {
        let name = start.local_name();
        let name: &str = name.as_ref();
        let at = (name.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        match self.text.get(at..at.wrapping_add(name.len())) {
            Some(s) if std::ptr::eq(s.as_ptr(), name.as_ptr()) => Cow::Borrowed(s),
            _ => Cow::Owned(name.to_owned()),
        }
    }

    /// An element opens (`Start` or `Empty`): the same checks, in the same order, as ever.
    fn check_open(&self, start: &BytesStart<'_>) -> Result<(), XmlError> {
        check_attributes(start)?;
        if self.root_closed {
            return Err(XmlError::Malformed("content after the root element".into()));
        }
        if self.depth >= MAX_DEPTH {
            return Err(XmlError::TooDeep);
        }
        Ok(())
    }

    fn event<F: Fields<'a>>(&mut self, fields: &mut F) -> Result<Progress<'a>, XmlError> {
        let event = self
            .reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::Start(start) => {
                self.check_open(&start)?;
                self.depth += 1;
                self.slots[self.depth] = Slot::default();
                fields.open(self.depth, start.local_name().as_ref());
                if self.depth == 1 {
                    return Ok(Progress::Root(self.local_name(&start)));
                }
            }
            Event::Empty(start) => {
                self.check_open(&start)?;
                let depth = self.depth + 1;
                fields.open(depth, start.local_name().as_ref());
                fields.close(depth, &None);
                if depth == 1 {
                    self.root_closed = true;
                    return Ok(Progress::Root(self.local_name(&start)));
                }
            }
            Event::End(_) => {
                if self.depth == 0 {
                    return Err(XmlError::Malformed("unexpected end tag".into()));
                }
                let value = self.slots[self.depth].value();
                fields.close(self.depth, &value);
                self.depth -= 1;
                if self.depth == 0 {
                    self.root_closed = true;
                } else if let Some(v) = value {
                    let parent = &mut self.slots[self.depth];
                    if parent.child.is_none() {
                        parent.child = Some(v);
                    }
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                if self.depth > 0 {
                    self.slots[self.depth].push(s);
                } else if !s.trim().is_empty() {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
            }
            Event::CData(c) if self.depth > 0 => {
                self.slots[self.depth].push(c.xml10_content());
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<'a, str> = match r.resolve_char_ref() {
                    Ok(Some(ch)) => Cow::Owned(ch.to_string()),
                    _ => {
                        let name = r.xml10_content();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(Cow::Borrowed)
                            .ok_or_else(|| {
                                XmlError::Malformed(format!("unknown entity &{name};"))
                            })?
                    }
                };
                if self.depth > 0 {
                    self.slots[self.depth].push(resolved);
                }
            }
            Event::Eof => {
                if self.depth != 0 {
                    return Err(XmlError::Malformed(
                        "the document ends inside an element".into(),
                    ));
                }
                if !self.root_closed {
                    return Err(XmlError::Empty);
                }
                return Ok(Progress::Eof);
            }
            // Declarations, comments, processing instructions, DOCTYPE: nothing to read.
            _ => {}
        }
        Ok(Progress::Continue)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The values of `paths` in `doc`, and the root's name.
    fn read<const N: usize>(
        doc: &str,
        paths: [&[Step]; N],
    ) -> Result<(String, [Option<String>; N]), XmlError> {
        let mut scan = Scan::new(doc.as_bytes())?;
        let root = scan.root()?.into_owned();
        let mut q = paths.map(Query::new);
        scan.finish(&mut q)?;
        Ok((root, q.map(|mut q| q.take())))
    }

    #[test]
    fn reads_local_names_whatever_the_prefix() {
        let doc = r#"<?xml version="1.0"?><csta:A xmlns:csta="urn:x"><csta:b> 1 &amp; 2 </csta:b><c/></csta:A>"#;
        let (root, [b, c]) = read(doc, [&[Step::Name("b")], &[Step::Name("c")]]).unwrap();
        assert_eq!(root, "A");
        assert_eq!((b.as_deref(), c), (Some("1 & 2"), None));
    }

    #[test]
    fn refuses_broken_documents() {
        let refused = |doc: &[u8]| {
            Scan::new(doc)
                .and_then(|mut s| s.root().map(|_| s))
                .and_then(|mut s| s.finish(&mut ()))
        };
        assert!(refused(b"<a><b></a>").is_err());
        assert!(refused(b"<a>").is_err());
        // Attributes with no space between them, or twice the same.
        assert!(refused(br#"<a><b x="1"y="2">3</b></a>"#).is_err());
        assert!(refused(br#"<a x="1" x="2"/>"#).is_err());
        assert!(refused(br#"<a x="1" y='2'>3</a>"#).is_ok());
        assert!(refused(b"<a/>text").is_err());
        assert!(refused(b"<a/><b/>").is_err());
        assert_eq!(refused(b""), Err(XmlError::Empty));
        assert_eq!(refused(&[0xff, 0xfe]), Err(XmlError::NotUtf8));
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(refused(deep.as_bytes()), Err(XmlError::TooDeep));
    }

    #[test]
    fn values_look_through_wrappers_and_take_the_first_element() {
        let doc = "<e><device><deviceIdentifier>5001</deviceIdentifier></device>\
                   <device>5002</device><x><y/><z> 7 <w>8</w>\n</z></x></e>";
        let (_, [device, x, z]) = read(
            doc,
            [
                &[Step::Name("device")],
                &[Step::Name("x")],
                &[Step::Name("x"), Step::Any],
            ],
        )
        .unwrap();
        assert_eq!(device.as_deref(), Some("5001"));
        // `x`'s own text is empty: the first child value in document order is `z`'s own text.
        assert_eq!(x.as_deref(), Some("7"));
        // The first child of `x` is the empty `y`: no value, and `z` is not tried.
        assert_eq!(z, None);
    }

    #[test]
    fn text_is_borrowed_unless_it_had_to_be_assembled() {
        let mut slot = Slot::default();
        slot.push(Cow::Borrowed("\n  "));
        slot.push(Cow::Borrowed(" 5001 "));
        slot.push(Cow::Borrowed("\n"));
        let v = slot.value().unwrap();
        assert!(
            matches!(v, Cow::Owned(_)),
            "the text and a later piece were joined"
        );
        assert_eq!(v, "5001");
        let mut slot = Slot::default();
        slot.push(Cow::Borrowed("\n  "));
        slot.push(Cow::Borrowed(" 5001 "));
        assert!(matches!(slot.value(), Some(Cow::Borrowed("5001"))));
    }
}
