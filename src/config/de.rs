//! Typed configuration from a [`Node`] tree, reporting every problem at once.
//!
//! A plain serde deserializer stops at the first error. This one records a problem (with the
//! file, line and column of the node, and the key path) and carries on with a neutral value, so
//! `validate` lists every mistake in one run. The typed value is only used when nothing was
//! recorded. Unknown keys are found here too: `deserialize_struct` is told the field names.
//!
//! Scalars with a syntax of their own (durations, quantities, secret references) are newtype
//! structs named `packfy::…`; this deserializer checks their text so the error points at it.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::diag::{suggest, Diagnostic};
use super::node::{Entry, Node, Value};

#[derive(Debug)]
pub struct DeError {
    msg: String,
    recorded: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            recorded: false,
        }
    }
}

/// A typed value recovered as far as possible, with every problem met on the way.
///
/// `value` is `None` only when a problem made the whole value impossible to build; otherwise
/// it holds neutral values (0, "", defaults) where problems were. `poisoned` lists the key paths
/// of those neutral values, so later rules can leave them alone instead of reporting an
/// invented `0` as a second mistake.
#[derive(Debug)]
pub struct Typed<T> {
    pub value: Option<T>,
    pub problems: Vec<Diagnostic>,
    pub poisoned: Vec<String>,
}

/// Deserializes `T` from `node`; `path` prefixes the key paths in messages.
pub fn from_node<T: de::DeserializeOwned>(node: &Node, path: &str) -> Result<T, Vec<Diagnostic>> {
    let typed = from_node_partial(node, path);
    match typed.value {
        Some(v) if typed.problems.is_empty() => Ok(v),
        _ => Err(typed.problems),
    }
}

/// Like [`from_node`], but keeps the recovered value and the paths of neutral values.
pub fn from_node_partial<T: de::DeserializeOwned>(node: &Node, path: &str) -> Typed<T> {
    typed(node, path, &[])
}

/// One layer of a file as written (the whole file, or one `environments.<env>` overlay),
/// without copying it: top-level keys in `skip` are left out, and so is every `null` (in a
/// layer it removes an inherited value; typed alone it means "not set").
pub fn from_layer_partial<T: de::DeserializeOwned>(node: &Node, skip: &[&str]) -> Typed<T> {
    typed(node, "", skip)
}

fn typed<T: de::DeserializeOwned>(node: &Node, path: &str, skip_root: &[&str]) -> Typed<T> {
    let sink = RefCell::new(Sink {
        skip_root: skip_root.iter().map(|s| s.to_string()).collect(),
        ..Sink::default()
    });
    let de = NodeDe {
        node,
        sink: &sink,
        path: path.to_string(),
    };
    let result = T::deserialize(de);
    let Sink {
        mut problems,
        poisoned,
        ..
    } = sink.into_inner();
    let value = match result {
        Ok(v) => Some(v),
        Err(e) => {
            if !e.recorded {
                problems.push(Diagnostic::at(&node.loc, e.msg));
            }
            None
        }
    };
    Typed {
        value,
        problems,
        poisoned,
    }
}

/// Where problems go while deserializing.
#[derive(Default)]
struct Sink {
    problems: Vec<Diagnostic>,
    /// Key paths whose value was replaced by a neutral one.
    poisoned: Vec<String>,
    /// Top-level keys not to read (see [`from_layer_partial`]).
    skip_root: Vec<String>,
}

/// The name [`super::model::EnvValue`] deserializes itself under, to get the check below.
pub const ENV_VALUE: &str = "packfy::EnvValue";

/// A syntax check for a `packfy::…` scalar: Ok, or (message, hint).
type Check = fn(&str) -> Result<(), (String, String)>;

/// The neutral value used after a problem was recorded, and the check.
fn special(name: &str) -> Option<(&'static str, Check)> {
    match name {
        "packfy::Duration" => Some(("0s", |s| super::model::parse_duration(s).map(|_| ()))),
        "packfy::Quantity" => Some(("0", |s| super::model::check_quantity(s))),
        "packfy::SecretRef" => Some(("env:UNSET", |s| super::model::check_secret_ref(s))),
        _ => None,
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a RefCell<Sink>,
    path: String,
}

impl<'a> NodeDe<'a> {
    /// A problem with this node's value; the value is replaced by a neutral one.
    fn record(&self, message: String, hint: Option<String>) {
        let mut d = Diagnostic::at(&self.node.loc, message);
        d.hint = hint;
        self.push(d);
        self.poison();
    }

    /// A problem that leaves this node's value usable (an unknown key beside known ones).
    fn push(&self, d: Diagnostic) {
        self.sink.borrow_mut().problems.push(d);
    }

    /// The entries of a mapping to read: not `null` ones (not set; layering already removed
    /// what they remove), nor the skipped top-level keys.
    fn entries(&self, m: &'a super::node::Map) -> Vec<(&'a String, &'a Entry)> {
        let sink = self.sink.borrow();
        let root = self.path.is_empty() && !sink.skip_root.is_empty();
        m.entries
            .iter()
            .filter(|(k, e)| e.value.value != Value::Null && !(root && sink.skip_root.contains(k)))
            .collect()
    }

    fn poison(&self) {
        self.sink.borrow_mut().poisoned.push(self.path.clone());
    }

    fn label(&self) -> String {
        if self.path.is_empty() {
            "the file".to_string()
        } else {
            self.path.clone()
        }
    }

    fn mismatch(&self, expected: &str) {
        let found = match &self.node.value {
            Value::Str(s) => format!("a string ({})", self.node.display_short(s)),
            Value::Int(i) => format!("an integer ({i})"),
            Value::Float(x) => format!("a number ({x:?})"),
            Value::Bool(b) => format!("a boolean ({b})"),
            other => other.kind().to_string(),
        };
        let hint = match (&self.node.value, expected) {
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), "a string") => {
                Some("quote the value to make it a string".to_string())
            }
            (Value::Str(s), "an integer" | "a number") if s.trim().parse::<f64>().is_ok() => {
                Some("remove the quotes: a quoted number is text".to_string())
            }
            (Value::Str(s), "true or false") if matches!(s.as_str(), "true" | "false") => {
                Some("remove the quotes: a quoted boolean is text".to_string())
            }
            (Value::Str(s), "true or false")
                if matches!(
                    s.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n"
                ) =>
            {
                Some("write true or false; YAML 1.2 reads yes/no/on/off as text".to_string())
            }
            _ => None,
        };
        self.record(
            format!("{}: expected {expected}, found {found}", self.label()),
            hint,
        );
    }

    /// Records an error a visitor returned (a custom Deserialize impl) at this node, once.
    fn own<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|mut e| {
            if !e.recorded {
                self.record(format!("{}: {}", self.label(), e.msg), None);
                e.recorded = true;
            }
            e
        })
    }

    fn child(&self, node: &'a Node, key: &str) -> NodeDe<'a> {
        NodeDe {
            node,
            sink: self.sink,
            // built by hand: this runs for every value of every region (format! is slower)
            path: if self.path.is_empty() {
                key.to_string()
            } else {
                let mut p = String::with_capacity(self.path.len() + 1 + key.len());
                p.push_str(&self.path);
                p.push('.');
                p.push_str(key);
                p
            },
        }
    }

    /// An environment variable's value: a scalar, or `{secret: REF}` and nothing else. Any
    /// other shape is recorded here and read as an empty string, so checking goes on.
    fn env_value<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let ok = match &self.node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => true,
            Value::Map(m) if m.entries.is_empty() => {
                self.record(
                    format!("{}: an empty mapping", self.label()),
                    Some("write a value, or {secret: \"env:NAME\"} for a secret".into()),
                );
                false
            }
            Value::Map(m) => {
                let mut ok = true;
                for (key, entry) in m.entries.iter().filter(|(k, _)| *k != "secret") {
                    let mut d = Diagnostic::at(
                        &entry.key_loc,
                        format!("unknown field '{key}' in {}", self.label()),
                    );
                    d.hint = Some(suggest(key, ["secret"], || {
                        "an environment value is a plain value or {secret: \"env:NAME\"}".into()
                    }));
                    self.push(d);
                    self.poison();
                    ok = false;
                }
                ok
            }
            _ => {
                self.mismatch("a string, a number, a boolean or {secret: \"env:NAME\"}");
                false
            }
        };
        if ok {
            let inner = NodeDe {
                node: self.node,
                sink: self.sink,
                path: self.path.clone(),
            };
            let r = visitor.visit_newtype_struct(inner);
            return self.own(r);
        }
        let de: de::value::StrDeserializer<DeError> = "".into_deserializer();
        let r = visitor.visit_newtype_struct(de);
        self.own(r)
    }

    fn int(&self, min: i128, max: i128, what: &str) -> Option<i128> {
        match self.node.value {
            Value::Int(i) if (i as i128) >= min && (i as i128) <= max => Some(i as i128),
            Value::Int(i) if (i as i128) < min && min == 0 => {
                self.record(
                    format!("{}: must not be negative, got {i}", self.label()),
                    None,
                );
                None
            }
            Value::Int(i) => {
                self.record(
                    format!("{}: {i} is out of range ({min}..={max})", self.label()),
                    None,
                );
                None
            }
            _ => {
                self.mismatch(what);
                None
            }
        }
    }
}

impl Node {
    fn display_short(&self, s: &str) -> String {
        if self.secret_ref().is_some() {
            return "<secret>".into();
        }
        let mut t: String = s.chars().take(40).collect();
        if t.len() < s.len() {
            t.push('…');
        }
        format!("\"{t}\"")
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self
                .int(<$ty>::MIN as i128, <$ty>::MAX as i128, "an integer")
                .unwrap_or(0);
            let r = visitor.$visit(v as $ty);
            self.own(r)
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAcc::new(&self, items)),
            Value::Map(m) => visitor.visit_map(MapAcc::new(&self, self.entries(m))),
        };
        self.own(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let b = match self.node.value {
            Value::Bool(b) => b,
            _ => {
                self.mismatch("true or false");
                false
            }
        };
        let r = visitor.visit_bool(b);
        self.own(r)
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let x = match self.node.value {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            _ => {
                self.mismatch("a number");
                0.0
            }
        };
        let r = visitor.visit_f64(x);
        self.own(r)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let s = match &self.node.value {
            Value::Str(s) => s.as_str(),
            _ => {
                self.mismatch("a string");
                ""
            }
        };
        let r = visitor.visit_str(s);
        self.own(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.value != Value::Null {
            self.mismatch("null");
        }
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if let Some((neutral, check)) = special(name) {
            let text = match &self.node.value {
                Value::Str(s) => s.clone(),
                // `timeout: 5` is a common slip; say which unit is missing instead of "a string".
                Value::Int(i) if name == "packfy::Duration" => {
                    self.record(
                        format!("{}: a duration needs a unit, got {i}", self.label()),
                        Some(format!(
                            "write '{i}s' for seconds or '{i}ms' for milliseconds"
                        )),
                    );
                    neutral.to_string()
                }
                Value::Int(i) => i.to_string(),
                Value::Float(x) if name == "packfy::Quantity" => x.to_string(),
                _ => {
                    self.mismatch("a string");
                    neutral.to_string()
                }
            };
            let text = match check(&text) {
                Ok(()) => text,
                Err((msg, hint)) => {
                    self.record(format!("{}: {msg}", self.label()), Some(hint));
                    neutral.to_string()
                }
            };
            let de: de::value::StringDeserializer<DeError> = text.into_deserializer();
            let r = visitor.visit_newtype_struct(de);
            return self.own(r);
        }
        if name == ENV_VALUE {
            return self.env_value(visitor);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                let r = visitor.visit_seq(SeqAcc::new(&self, items));
                self.own(r)
            }
            _ => {
                self.mismatch("a list");
                visitor.visit_seq(SeqAcc::new(&self, &[]))
            }
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(m) => visitor.visit_map(MapAcc::new(&self, self.entries(m))),
            _ => {
                self.mismatch("a mapping");
                visitor.visit_map(MapAcc::new(&self, Vec::new()))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Map(m) = &self.node.value else {
            self.mismatch("a mapping");
            return visitor.visit_map(MapAcc::new(&self, Vec::new()));
        };
        let mut known = Vec::new();
        for (key, entry) in self.entries(m) {
            if fields.contains(&key.as_str()) {
                known.push((key, entry));
                continue;
            }
            let mut d = Diagnostic::at(&entry.key_loc, format!("unknown field '{key}'"));
            if !self.path.is_empty() {
                d.message.push_str(&format!(" in {}", self.path));
            }
            d.hint = Some(suggest(key, fields.iter().copied(), || {
                format!("expected one of: {}", fields.join(", "))
            }));
            self.push(d);
        }
        let r = visitor.visit_map(MapAcc::new(&self, known));
        self.own(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if let Value::Map(m) = &self.node.value {
            if m.entries.len() == 1 {
                let (key, entry) = m.entries.iter().next().expect("one entry");
                if variants.contains(&key.as_str()) {
                    let r = visitor.visit_enum(VariantAcc {
                        key,
                        value: self.child(&entry.value, key),
                    });
                    return self.own(r);
                }
                let hint = suggest(key, variants.iter().copied(), || {
                    format!("expected one of: {}", variants.join(", "))
                });
                self.push(
                    Diagnostic::at(
                        &entry.key_loc,
                        format!("{}: unknown kind '{key}'", self.label()),
                    )
                    .hint(hint),
                );
                self.poison();
                return neutral_variant(variants, visitor);
            }
        }
        let chosen = match &self.node.value {
            Value::Str(s) if variants.contains(&s.as_str()) => s.as_str(),
            Value::Str(s) => {
                let hint = suggest(s, variants.iter().copied(), || {
                    format!("expected one of: {}", variants.join(", "))
                });
                self.record(format!("{}: unknown value '{s}'", self.label()), Some(hint));
                return neutral_variant(variants, visitor);
            }
            _ => {
                self.mismatch(&format!("one of: {}", variants.join(", ")));
                return neutral_variant(variants, visitor);
            }
        };
        let de: de::value::StrDeserializer<DeError> = chosen.into_deserializer();
        let r = visitor.visit_enum(de);
        self.own(r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// The first variant, standing in for a wrong one so the rest of the file is still checked.
/// Errors on the way are not reported: the real problem already is.
fn neutral_variant<'de, V: Visitor<'de>>(
    variants: &'static [&'static str],
    visitor: V,
) -> Result<V::Value, DeError> {
    let de: de::value::StrDeserializer<DeError> = variants[0].into_deserializer();
    visitor.visit_enum(de).map_err(|e| DeError {
        msg: e.msg,
        recorded: true,
    })
}

struct SeqAcc<'a> {
    parent: NodeDe<'a>,
    items: &'a [Node],
    index: usize,
}

impl<'a> SeqAcc<'a> {
    fn new(parent: &NodeDe<'a>, items: &'a [Node]) -> Self {
        SeqAcc {
            parent: NodeDe {
                node: parent.node,
                sink: parent.sink,
                path: parent.path.clone(),
            },
            items,
            index: 0,
        }
    }
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAcc<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.index) else {
            return Ok(None);
        };
        let child = self.parent.child(item, &self.index.to_string());
        self.index += 1;
        seed.deserialize(child).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

struct MapAcc<'a> {
    parent: NodeDe<'a>,
    entries: std::vec::IntoIter<(&'a String, &'a Entry)>,
    value: Option<(&'a String, &'a Entry)>,
}

impl<'a> MapAcc<'a> {
    fn new(parent: &NodeDe<'a>, entries: Vec<(&'a String, &'a Entry)>) -> Self {
        MapAcc {
            parent: NodeDe {
                node: parent.node,
                sink: parent.sink,
                path: parent.path.clone(),
            },
            entries: entries.into_iter(),
            value: None,
        }
    }
}

impl<'de, 'a> de::MapAccess<'de> for MapAcc<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, entry)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, entry));
        let de: de::value::StrDeserializer<DeError> = key.as_str().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|mut e| {
            if !e.recorded {
                self.parent.sink.borrow_mut().problems.push(Diagnostic::at(
                    &entry.key_loc,
                    format!("key '{key}': {}", e.msg),
                ));
                e.recorded = true;
            }
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, entry) = self.value.take().expect("value requested before key");
        seed.deserialize(self.parent.child(&entry.value, key))
    }
}

/// `{haproxy: {...}}`: an enum variant written as a one-key mapping.
struct VariantAcc<'a> {
    key: &'a str,
    value: NodeDe<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for VariantAcc<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let de: de::value::StrDeserializer<DeError> = self.key.into_deserializer();
        Ok((seed.deserialize(de)?, self.value))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests;
