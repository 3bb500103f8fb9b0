//! Layering: defaults → region → defaults' environment overlay → region's environment overlay.
//!
//! Maps merge key by key, lists and scalars replace, and an explicit `null` removes an inherited
//! key (Kamal cannot unset an inherited key: kamal#1477). Every replaced value is remembered on
//! the node that replaced it, so `explain` can show the whole history.

use std::sync::Arc;

use super::node::{Entry, Map, Node, Value};

/// Merges `overlay` onto `base` and returns the result.
pub fn merge(base: Node, overlay: &Node) -> Node {
    merge_except(base, overlay, &[])
}

/// [`merge`], leaving out the overlay's top-level keys in `skip` (a file's `environments:`),
/// without copying the file first.
pub fn merge_except(base: Node, overlay: &Node, skip: &[&str]) -> Node {
    match (base.value, &overlay.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (key, entry) in o
                .entries
                .iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
            {
                if entry.value.value == Value::Null {
                    if let Some(old) = b.entries.shift_remove(key) {
                        b.removed.push((
                            key.clone(),
                            entry.value.loc.clone(),
                            Arc::unwrap_or_clone(old.value),
                        ));
                    }
                    continue;
                }
                match b.entries.get_mut(key) {
                    Some(existing) => {
                        // the old value is shared with other layerings: copied only if so
                        let old = std::mem::replace(&mut existing.value, entry.value.clone());
                        existing.value = Arc::new(merge(Arc::unwrap_or_clone(old), &entry.value));
                    }
                    None => {
                        let value = without_nulls(&entry.value);
                        let key_loc = entry.key_loc.clone();
                        b.entries.insert(key.clone(), Entry { key_loc, value });
                    }
                }
            }
            b.removed.extend(o.removed.iter().cloned());
            Node {
                value: Value::Map(b),
                loc: base.loc,
                overridden: base.overridden,
            }
        }
        (old, _) => {
            let mut new = strip_nulls_node(overlay.clone());
            new.overridden = base.overridden;
            new.overridden.push(Node::new(old, base.loc));
            new
        }
    }
}

/// A `null` with nothing to remove means "not set": drop it so typed defaults apply. A value
/// without any is shared as it is.
fn without_nulls(node: &Arc<Node>) -> Arc<Node> {
    if has_nulls(node) {
        Arc::new(strip_nulls_node(Node::clone(node)))
    } else {
        Arc::clone(node)
    }
}

fn has_nulls(node: &Node) -> bool {
    match &node.value {
        Value::Map(m) => m
            .entries
            .values()
            .any(|e| e.value.value == Value::Null || has_nulls(&e.value)),
        _ => false,
    }
}

fn strip_nulls_node(mut node: Node) -> Node {
    if let Value::Map(m) = &mut node.value {
        let entries = std::mem::take(&mut m.entries);
        m.entries = entries
            .into_iter()
            .filter(|(_, e)| e.value.value != Value::Null)
            .map(|(k, e)| {
                let value = without_nulls(&e.value);
                (k, Entry { value, ..e })
            })
            .collect();
    }
    node
}

/// A map without the given keys (used to take `environments:` out of a file before layering).
pub fn without(node: &Node, keys: &[&str]) -> Node {
    match &node.value {
        Value::Map(m) => Node {
            value: Value::Map(Map {
                entries: m
                    .entries
                    .iter()
                    .filter(|(k, _)| !keys.contains(&k.as_str()))
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect(),
                removed: m.removed.clone(),
            }),
            loc: node.loc.clone(),
            overridden: node.overridden.clone(),
        },
        _ => node.clone(),
    }
}

/// A map with only the given keys of `node` (and its location).
pub fn only(node: &Node, keys: &[&str]) -> Node {
    match &node.value {
        Value::Map(m) => Node::new(
            Value::Map(Map {
                entries: keys
                    .iter()
                    .filter_map(|k| m.entries.get(*k).map(|e| (k.to_string(), e.clone())))
                    .collect(),
                removed: Vec::new(),
            }),
            node.loc.clone(),
        ),
        _ => empty_like(node),
    }
}

/// An empty map located at `node` (the neutral element of [`merge`]).
pub fn empty_like(node: &Node) -> Node {
    Node::new(Value::Map(Map::default()), node.loc.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use std::sync::Arc;

    fn p(name: &str, text: &str) -> Node {
        parse(&Arc::from(name), text).unwrap()
    }

    #[test]
    fn maps_merge_deeply_and_lists_replace() {
        let base = p("d.yaml", "a: {x: 1, y: 2}\nl: [1, 2, 3]\n");
        let over = p("r.yaml", "a: {y: 5}\nl: [9]\n");
        let m = merge(base, &over);
        assert_eq!(m.lookup("a.x").unwrap().value, Value::Int(1));
        assert_eq!(m.lookup("a.y").unwrap().value, Value::Int(5));
        assert_eq!(m.lookup("l").unwrap().display(), "[9]");
    }

    #[test]
    fn null_removes_an_inherited_key() {
        let base = p("d.yaml", "a: {x: 1, y: 2}\n");
        let over = p("r.yaml", "a: {x: null}\n");
        let m = merge(base, &over);
        assert!(m.lookup("a.x").is_none());
        let removed = &m.get("a").unwrap().as_map().unwrap().removed;
        assert_eq!(removed[0].0, "x");
        assert_eq!(removed[0].1.to_string(), "r.yaml:1:8");
    }

    #[test]
    fn provenance_follows_the_last_writer_and_keeps_history() {
        let d = p("d.yaml", "r: 3\n");
        let r = p("r.yaml", "r: 4\n");
        let e = p("e.yaml", "r: 5\n");
        let m = merge(merge(d, &r), &e);
        let n = m.get("r").unwrap();
        assert_eq!(n.loc.to_string(), "e.yaml:1:4");
        let hist: Vec<String> = n
            .overridden
            .iter()
            .map(|o| format!("{}@{}", o.display(), o.loc))
            .collect();
        assert_eq!(hist, ["3@d.yaml:1:4", "4@r.yaml:1:4"]);
    }

    #[test]
    fn null_removes_a_whole_inherited_map_and_remembers_it() {
        let base = p(
            "d.yaml",
            "services:\n  backend: {replicas: 3}\n  frontend: {replicas: 2}\n",
        );
        let over = p("r.yaml", "services:\n  frontend: null\n");
        let m = merge(base, &over);
        assert!(m.lookup("services.frontend").is_none());
        assert_eq!(
            m.lookup("services.backend.replicas").unwrap().value,
            Value::Int(3)
        );
        let removed = &m.get("services").unwrap().as_map().unwrap().removed;
        assert_eq!(removed.len(), 1);
        let (key, at, old) = &removed[0];
        assert_eq!(key, "frontend");
        assert_eq!(at.to_string(), "r.yaml:2:13");
        assert_eq!(old.display(), "{replicas: 2}");
        assert_eq!(old.loc.to_string(), "d.yaml:3:13");
    }

    #[test]
    fn a_later_layer_can_set_a_removed_key_again() {
        let d = p("d.yaml", "a: {x: 1}\n");
        let r = p("r.yaml", "a: {x: null}\n");
        let e = p("e.yaml", "a: {x: 7}\n");
        let m = merge(merge(d, &r), &e);
        let x = m.lookup("a.x").unwrap();
        assert_eq!(x.value, Value::Int(7));
        assert_eq!(x.loc.to_string(), "e.yaml:1:8");
        // the removal is still on record for `explain`
        assert_eq!(m.get("a").unwrap().as_map().unwrap().removed.len(), 1);
    }

    #[test]
    fn nulls_inside_a_new_value_are_dropped() {
        let m = merge(
            p("d.yaml", "a: 1\n"),
            &p("r.yaml", "b: {c: null, d: {e: null, f: 2}}\n"),
        );
        assert_eq!(m.lookup("b").unwrap().display(), "{d: {f: 2}}");
    }

    #[test]
    fn a_map_replaced_by_a_scalar_and_back_keeps_its_history() {
        let d = p("d.yaml", "health: {http: {path: /}}\n");
        let r = p("r.yaml", "health: off\n");
        let e = p("e.yaml", "health: {tcp: {port: 1}}\n");
        let m = merge(merge(d, &r), &e);
        let h = m.get("health").unwrap();
        assert_eq!(h.display(), "{tcp: {port: 1}}");
        let hist: Vec<String> = h
            .overridden
            .iter()
            .map(|o| format!("{}@{}", o.display(), o.loc))
            .collect();
        assert_eq!(hist, ["{http: {path: /}}@d.yaml:1:9", "\"off\"@r.yaml:1:9"]);
    }

    #[test]
    fn lists_replace_whole_and_take_the_new_location() {
        let m = merge(
            p("d.yaml", "ports: [{container: 80}, {container: 443}]\n"),
            &p("r.yaml", "x: 1\nports: [{container: 8080}]\n"),
        );
        let ports = m.get("ports").unwrap();
        assert_eq!(ports.display(), "[{container: 8080}]");
        assert_eq!(ports.loc.to_string(), "r.yaml:2:8");
        assert_eq!(ports.overridden.len(), 1);
    }

    #[test]
    fn keys_keep_their_first_position_and_new_keys_go_last() {
        let m = merge(p("d.yaml", "a: 1\nb: 2\n"), &p("r.yaml", "c: 3\na: 4\n"));
        let keys: Vec<&String> = m.as_map().unwrap().entries.keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn without_takes_keys_out() {
        let n = without(
            &p("d.yaml", "a: 1\nenvironments: {production: {}}\n"),
            &["environments"],
        );
        assert_eq!(n.display(), "{a: 1}");
        assert_eq!(empty_like(&n).display(), "{}");
    }

    #[test]
    fn a_null_with_nothing_to_remove_disappears() {
        let m = merge(p("d.yaml", "a: 1\n"), &p("r.yaml", "b: {c: null}\n"));
        assert!(m.lookup("b.c").is_none());
        assert!(m.lookup("b").is_some());
    }
}
