//! Reading one YAML file into a [`Node`] tree, defensively.
//!
//! Region files come from people and from generators, so the reader refuses what would hang or
//! exhaust memory instead of trusting the input: files above [`MAX_FILE_BYTES`], nesting deeper
//! than [`MAX_DEPTH`], and alias expansion beyond [`MAX_NODES`] (the "billion laughs" bomb).
//! Duplicate keys are errors (YAML says they are, most parsers silently keep the last one).

use std::sync::Arc;

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::diag::Diagnostic;
use super::node::{Entry, Loc, Map, Node, Value};

/// Region files are a few kilobytes; a megabyte is already generated data.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Deeper nesting than this is a mistake, and unbounded depth can overflow the stack.
pub const MAX_DEPTH: usize = 64;
/// Total nodes after expanding aliases; a bomb of nine nested aliases would make ~10^9.
pub const MAX_NODES: usize = 100_000;

/// Parses YAML text. `file` is the name used in locations.
pub fn parse(file: &Arc<str>, text: &str) -> Result<Node, Diagnostic> {
    if text.trim().is_empty() {
        return Err(Diagnostic::at(&Loc::new(file, 1, 1), "the file is empty")
            .hint("a region file is a mapping of settings, e.g. `currency: MXN`"));
    }
    let mut builder = Builder {
        file: file.clone(),
        text,
        anchors: Vec::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    loop {
        let (event, span) = next(file, text, &mut parser)?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if !docs.is_empty() {
                    return Err(Diagnostic::at(
                        &builder.loc(&span),
                        "a second YAML document (`---`) in one file",
                    )
                    .hint("put each region in its own file"));
                }
                let (ev, sp) = next(file, text, &mut parser)?;
                docs.push(builder.node(&mut parser, ev, sp, 0)?);
            }
            other => {
                return Err(Diagnostic::at(
                    &builder.loc(&span),
                    format!("unexpected YAML event {other:?}"),
                ))
            }
        }
    }
    docs.pop().ok_or_else(|| {
        Diagnostic::at(&Loc::new(file, 1, 1), "the file is empty")
            .hint("a region file is a mapping of settings, e.g. `currency: MXN`")
    })
}

fn next<'a>(
    file: &Arc<str>,
    text: &str,
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), Diagnostic> {
    match parser.next_event() {
        Some(Ok(ev)) => Ok(ev),
        Some(Err(e)) => {
            let m = e.marker();
            let (mut line, mut col) = (m.line(), m.col() + 1);
            let tab = if e.info().contains("tab") {
                find_tab(text, line, usize::MAX)
            } else {
                find_tab(text, line, col).filter(|t| t.0 == line)
            };
            let mut hint = None;
            if let Some(t) = tab {
                // The scanner points after the tab, or at the scalar before it.
                (line, col) = t;
                hint =
                    Some("replace the tab with spaces; YAML does not allow tabs for indentation");
            }
            let mut d = Diagnostic::at(
                &Loc::new(file, line, col),
                format!("invalid YAML: {}", e.info()),
            );
            d.hint = hint.map(str::to_string);
            Err(d)
        }
        None => Err(Diagnostic::at(
            &Loc::new(file, 1, 1),
            "invalid YAML: unexpected end of input",
        )),
    }
}

/// The first tab from the start of `line` up to column `before` of that line (or anywhere
/// after it when `before` is `usize::MAX`), as 1-based (line, column).
fn find_tab(text: &str, line: usize, before: usize) -> Option<(usize, usize)> {
    for (i, l) in text.split('\n').enumerate().skip(line.saturating_sub(1)) {
        let limit = if i + 1 == line { before } else { usize::MAX };
        if let Some(c) = l.chars().take(limit).position(|c| c == '\t') {
            return Some((i + 1, c + 1));
        }
        if before != usize::MAX {
            return None;
        }
    }
    None
}

struct Builder<'t> {
    file: Arc<str>,
    /// The whole text, to find what the scanner's position only approximates (tabs).
    text: &'t str,
    /// Anchored nodes by anchor id (ids are small consecutive integers).
    anchors: Vec<Option<Node>>,
    nodes: usize,
}

impl Builder<'_> {
    fn loc(&self, span: &Span) -> Loc {
        Loc::new(&self.file, span.start.line(), span.start.col() + 1)
    }

    fn count(&mut self, n: usize, span: &Span) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::at(
                &self.loc(span),
                format!("the document expands to more than {MAX_NODES} values"),
            )
            .hint("this looks like an alias bomb (anchors that multiply); write the values out"));
        }
        Ok(())
    }

    fn anchor(&mut self, id: usize, node: &Node) {
        if id == 0 {
            return;
        }
        if self.anchors.len() <= id {
            self.anchors.resize(id + 1, None);
        }
        self.anchors[id] = Some(node.clone());
    }

    fn node<'a>(
        &mut self,
        parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
        event: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<Node, Diagnostic> {
        if depth > MAX_DEPTH {
            return Err(Diagnostic::at(
                &self.loc(&span),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            )
            .hint("region files are a few levels deep; check the indentation"));
        }
        let loc = self.loc(&span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, &span)?;
                let value = if let Some(tag) = tag {
                    tagged_scalar(&tag.handle, &tag.suffix, &text)
                        .map_err(|m| Diagnostic::at(&loc, m))?
                } else if style == ScalarStyle::Plain {
                    plain_scalar(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                let node = Node::new(value, loc);
                self.anchor(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(id)
                    .and_then(|n| n.clone())
                    .ok_or_else(|| Diagnostic::at(&loc, "alias to an unknown anchor"))?;
                let size = size(&node);
                self.count(size, &span)?;
                Ok(node)
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, &span)?;
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = next(&self.file, self.text, parser)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(parser, ev, sp, depth + 1)?);
                }
                let node = Node::new(Value::Seq(items), loc);
                self.anchor(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, &span)?;
                let mut entries: IndexMap<String, Entry> = IndexMap::new();
                loop {
                    let (ev, sp) = next(&self.file, self.text, parser)?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key_loc = self.loc(&sp);
                    let key = match ev {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => {
                            return Err(Diagnostic::at(
                                &key_loc,
                                "a mapping key must be a plain scalar",
                            )
                            .hint("use `name: value` with a simple name"))
                        }
                    };
                    if key == "<<" {
                        return Err(Diagnostic::at(
                            &key_loc,
                            "merge keys (`<<`) are not supported",
                        )
                        .hint("use _defaults.yaml and environments: overlays to share values"));
                    }
                    let (ev, sp) = next(&self.file, self.text, parser)?;
                    let value = self.node(parser, ev, sp, depth + 1)?;
                    if let Some(first) = entries.get(&key) {
                        return Err(Diagnostic::at(&key_loc, format!("duplicate key '{key}'"))
                            .hint(format!("it is already set at {}", first.key_loc)));
                    }
                    entries.insert(
                        key,
                        Entry {
                            key_loc,
                            value: Arc::new(value),
                        },
                    );
                }
                let node = Node::new(
                    Value::Map(Map {
                        entries,
                        removed: Vec::new(),
                    }),
                    loc,
                );
                self.anchor(anchor, &node);
                Ok(node)
            }
            other => Err(Diagnostic::at(
                &loc,
                format!("unexpected YAML event {other:?}"),
            )),
        }
    }
}

fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(m) => m.entries.values().map(|e| size(&e.value)).sum(),
        _ => 0,
    }
}

/// YAML 1.2 core schema resolution of an unquoted scalar.
fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    let looks_numeric = text
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_numeric && !text.ends_with('.') {
        if let Ok(x) = text.parse::<f64>() {
            return Value::Float(x);
        }
    }
    match text {
        ".inf" | "+.inf" | ".Inf" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" => Value::Float(f64::NAN),
        _ => Value::Str(text.to_string()),
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn tagged_scalar(handle: &str, suffix: &str, text: &str) -> Result<Value, String> {
    // The parser resolves the `!!` shorthand to its full prefix.
    let handle = match handle {
        "tag:yaml.org,2002:" => "!!",
        other => other,
    };
    match (handle, suffix) {
        ("!!", "str") => Ok(Value::Str(text.to_string())),
        ("!!", "int") => parse_int(text)
            .map(Value::Int)
            .ok_or_else(|| format!("'{text}' is tagged !!int but is not an integer")),
        ("!!", "float") => text
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("'{text}' is tagged !!float but is not a number")),
        ("!!", "bool") => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "'{text}' is tagged !!bool but is not true or false"
            )),
        },
        ("!!", "null") => Ok(Value::Null),
        _ => Err(format!("unsupported YAML tag '{handle}{suffix}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Node, Diagnostic> {
        parse(&Arc::from("t.yaml"), text)
    }

    #[test]
    fn scalars_resolve_by_core_schema() {
        let n = p("a: 3\nb: '3'\nc: true\nd: ~\ne: 1.5\nf: 1.2.3\ng: -7\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(3));
        assert_eq!(n.get("b").unwrap().value, Value::Str("3".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("d").unwrap().value, Value::Null);
        assert_eq!(n.get("e").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("f").unwrap().value, Value::Str("1.2.3".into()));
        assert_eq!(n.get("g").unwrap().value, Value::Int(-7));
    }

    #[test]
    fn locations_are_one_based() {
        let n = p("a:\n  b: 1\n").unwrap();
        let b = n.lookup("a.b").unwrap();
        assert_eq!((b.loc.line, b.loc.col), (2, 6));
        let key = &n.get("a").unwrap().as_map().unwrap().entries["b"].key_loc;
        assert_eq!((key.line, key.col), (2, 3));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = p("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "duplicate key 'a' at t.yaml:3:1 — it is already set at t.yaml:1:1"
        );
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9u8 {
            let prev = (b'a' + i) as char;
            let cur = (b'b' + i) as char;
            text.push_str(&format!("{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = p(&text).unwrap_err();
        assert!(e.message.contains("expands to more than"), "{e}");
    }

    #[test]
    fn small_aliases_work() {
        let n = p("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(n.lookup("b.k").unwrap().value, Value::Int(1));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = p(&text).unwrap_err();
        assert!(e.message.contains("nesting deeper"), "{e}");
    }

    #[test]
    fn tabs_give_a_hint() {
        let e = p("a:\n\tb: 1\n").unwrap_err();
        assert!(e.to_string().contains("t.yaml:2:"), "{e}");
    }

    #[test]
    fn tabs_are_located_where_they_are() {
        let cases = [
            ("a: 1\n\tb: 2\n", "t.yaml:2:1"),
            ("a:\n  b:\n\t  c: 1\n", "t.yaml:3:1"),
            ("a:\n  - 1\n\t- 2\n", "t.yaml:3:1"),
            ("a:\t1\n", "t.yaml:1:3"),
        ];
        for (text, at) in cases {
            let e = p(text).unwrap_err();
            assert_eq!(e.loc.as_ref().unwrap().to_string(), at, "{text:?}: {e}");
            assert_eq!(
                e.hint.as_deref(),
                Some("replace the tab with spaces; YAML does not allow tabs for indentation"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_the_parser_message_and_place() {
        let e = p("a: [1, 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid YAML: while parsing a flow sequence, expected ',' or ']' at t.yaml:2:1"
        );
        let e = p("a: 'open\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML: "), "{e}");
        assert_eq!(e.hint, None);
    }

    #[test]
    fn refused_constructs() {
        let cases = [
            (
                "a: 1\n---\nb: 2\n",
                "a second YAML document (`---`) in one file at t.yaml:2:1 — put each region in its own file",
            ),
            (
                "base: &b {x: 1}\nother:\n  <<: *b\n",
                "merge keys (`<<`) are not supported at t.yaml:3:3 — use _defaults.yaml and environments: overlays to share values",
            ),
            (
                "? [a, b]\n: 1\n",
                "a mapping key must be a plain scalar at t.yaml:1:3 — use `name: value` with a simple name",
            ),
            ("a: !!int x\n", "'x' is tagged !!int but is not an integer at t.yaml:1:4"),
            ("a: !!bool yes\n", "'yes' is tagged !!bool but is not true or false at t.yaml:1:4"),
            ("a: !!float x\n", "'x' is tagged !!float but is not a number at t.yaml:1:4"),
            ("a: !vault secret\n", "unsupported YAML tag '!vault' at t.yaml:1:4"),
        ];
        for (text, want) in cases {
            assert_eq!(p(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn tags_that_are_understood() {
        let n = p("a: !!str 3\nb: !!int '7'\nc: !!null ''\nd: 0x1f\ne: 0o17\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Str("3".into()));
        assert_eq!(n.get("b").unwrap().value, Value::Int(7));
        assert_eq!(n.get("c").unwrap().value, Value::Null);
        assert_eq!(n.get("d").unwrap().value, Value::Int(31));
        assert_eq!(n.get("e").unwrap().value, Value::Int(15));
    }

    #[test]
    fn nesting_at_the_limit_is_fine() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(p(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert_eq!(
            p(&deep).unwrap_err().to_string(),
            "nesting deeper than 64 levels at t.yaml:1:66 — region files are a few levels deep; check the indentation"
        );
    }

    #[test]
    fn alias_bomb_message() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..6u8 {
            let (prev, cur) = ((b'a' + i) as char, (b'b' + i) as char);
            text.push_str(&format!("{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = p(&text).unwrap_err();
        assert_eq!(e.message, "the document expands to more than 100000 values",);
        assert_eq!(
            e.hint.as_deref(),
            Some("this looks like an alias bomb (anchors that multiply); write the values out")
        );
        assert_eq!(e.loc.unwrap().line, 5, "the alias that crosses the limit");
    }

    #[test]
    fn empty_file_is_an_error() {
        assert_eq!(p("  \n").unwrap_err().message, "the file is empty");
    }
}
