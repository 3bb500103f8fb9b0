//! The YAML tree every region file is read into before it is typed.
//!
//! Each node remembers where it was written (file, line, column) and, after merging, which
//! values it replaced. That is what `explain` prints and what every validation message points
//! at. Typed configuration is deserialized from this tree (see `de.rs`), never from raw text.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;

/// A position in a region file; `line` and `col` are 1-based, as editors count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Loc {
    pub fn new(file: &Arc<str>, line: usize, col: usize) -> Self {
        Loc {
            file: file.clone(),
            line: line as u32,
            col: col as u32,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One YAML value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
    /// Values this one replaced while layering, oldest first (for `explain`); each with its
    /// own location and an empty history of its own.
    pub overridden: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `quoted` is true for a quoted scalar: `"3"` stays a string, `3` is an integer.
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
}

/// A mapping in file order. Keys remember their own position, because an unknown or duplicate
/// key is reported where the key is written, not where its value is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    pub entries: IndexMap<String, Entry>,
    /// Keys an explicit `null` removed while layering: (key, where the null is, what it removed).
    pub removed: Vec<(String, Loc, Node)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key_loc: Loc,
    /// Shared: layering copies a region's tree once per environment, and only the paths an
    /// overlay changes need their own copy (`Arc::make_mut`-style, see `merge.rs`).
    pub value: Arc<Node>,
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Self {
        Node {
            value,
            loc,
            overridden: Vec::new(),
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.entries.get(key).map(|e| &*e.value)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the YAML type for messages: "a string", "a mapping"...
    pub fn kind(&self) -> &'static str {
        self.value.kind()
    }

    /// If this node is a secret reference (`{secret: "env:NAME"}`), the reference text.
    pub fn secret_ref(&self) -> Option<&str> {
        let m = self.as_map()?;
        if m.entries.len() == 1 {
            m.entries.get("secret")?.value.as_str()
        } else {
            None
        }
    }

    /// The value as one line of text, with secrets masked. Maps and lists render as flow YAML.
    pub fn display(&self) -> String {
        if let Some(r) = self.secret_ref() {
            return format!("<secret:{r}>");
        }
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => display_str(s),
            Value::Seq(items) => {
                let inner: Vec<String> = items.iter().map(Node::display).collect();
                format!("[{}]", inner.join(", "))
            }
            Value::Map(m) => {
                let inner: Vec<String> = m
                    .entries
                    .iter()
                    .map(|(k, e)| format!("{k}: {}", e.value.display()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }

    /// The value as JSON, with secrets masked.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        if let Some(r) = self.secret_ref() {
            return J::String(format!("<secret:{r}>"));
        }
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.entries
                    .iter()
                    .map(|(k, e)| (k.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Finds a node by a dotted path (`services.backend.replicas`, `services.backend.ports.0`).
    pub fn lookup(&self, path: &str) -> Option<&Node> {
        let mut cur = self;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            cur = match &cur.value {
                Value::Map(m) => &m.entries.get(seg)?.value,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Strings that would read back as another type are quoted, so `"3"` and `3` look different.
fn display_str(s: &str) -> String {
    let plain = !s.is_empty()
        && !matches!(
            s,
            "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
        )
        && s.parse::<f64>().is_err()
        && !s.starts_with([
            ' ', '-', '[', '{', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
        ])
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.contains(['\n', ',']);
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn p(text: &str) -> Node {
        parse(&Arc::from("n.yaml"), text).unwrap()
    }

    #[test]
    fn lookup_walks_maps_and_lists() {
        let n = p("s:\n  web:\n    ports: [{container: 80}, {container: 443}]\n");
        assert_eq!(
            n.lookup("s.web.ports.1.container").unwrap().value,
            Value::Int(443)
        );
        assert_eq!(n.lookup("").unwrap().loc.to_string(), "n.yaml:1:1");
        assert!(n.lookup("s.web.ports.2").is_none());
        assert!(n.lookup("s.web.ports.x").is_none());
        assert!(n.lookup("s.web.ports.0.container.deeper").is_none());
    }

    #[test]
    fn display_quotes_what_would_read_back_as_another_type() {
        let n = p("a: '3'\nb: 3\nc: 'true'\nd: ''\ne: 'a: b'\nf: plain text\ng: '-x'\nh: [1, 'x,y']\ni: ~\nj: 1.5\n");
        let shown: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .iter()
            .map(|k| n.get(k).unwrap().display())
            .collect();
        assert_eq!(
            shown,
            [
                "\"3\"",
                "3",
                "\"true\"",
                "\"\"",
                "\"a: b\"",
                "plain text",
                "\"-x\"",
                "[1, \"x,y\"]",
                "null",
                "1.5"
            ]
        );
    }

    #[test]
    fn secrets_are_masked_in_text_and_json() {
        let n = p(
            "env: {A: {secret: 'env:A'}, B: {secret: 'file:/run/b'}, C: {secret: x, other: y}}\n",
        );
        assert_eq!(n.lookup("env.A").unwrap().display(), "<secret:env:A>");
        assert_eq!(
            n.lookup("env.A").unwrap().to_json(),
            serde_json::json!("<secret:env:A>")
        );
        assert_eq!(n.lookup("env.B").unwrap().secret_ref(), Some("file:/run/b"));
        // only a one-key {secret: …} mapping is a reference
        assert_eq!(n.lookup("env.C").unwrap().secret_ref(), None);
        assert_eq!(
            n.get("env").unwrap().to_json(),
            serde_json::json!({"A": "<secret:env:A>", "B": "<secret:file:/run/b>", "C": {"secret": "x", "other": "y"}})
        );
    }

    #[test]
    fn kinds_for_messages() {
        let n = p("a: 1\nb: x\nc: [1]\nd: {}\ne: true\nf: 1.5\ng: null\n");
        let kinds: Vec<&str> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|k| n.get(k).unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "an integer",
                "a string",
                "a list",
                "a mapping",
                "a boolean",
                "a number",
                "null"
            ]
        );
    }
}
