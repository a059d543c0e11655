//! GitLab's deep merge, used by `include`, `extends` and `default`.

use crate::yaml::{Node, Value};

/// Merges `over` onto `base`: when both are maps, keys merge recursively (existing keys keep
/// their place, new keys are appended); otherwise `over` replaces `base`, lists included.
/// A `null` in `over` replaces too, which is how an extending job unsets an inherited key.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (k, e) in o {
                match b.get_mut(&k) {
                    Some(existing) => {
                        let span = e.value.span;
                        let old = std::mem::replace(&mut existing.value, Node::null(span));
                        existing.value = deep_merge(old, e.value);
                        existing.key_span = e.key_span;
                    }
                    None => {
                        b.insert(k, e);
                    }
                }
            }
            Node::new(Value::Map(b), over.span)
        }
        (_, v) => Node::new(v, over.span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;
    use crate::yaml::{Limits, parse};

    fn y(s: &str) -> Node {
        parse(s, FileId(0), &Limits::default(), &mut Vec::new()).unwrap().root
    }

    #[test]
    fn maps_merge_lists_replace_null_unsets() {
        let m = deep_merge(y("a: {x: 1, y: [1, 2]}\nb: 1\n"), y("a: {y: [3], z: 1}\nb: null\nc: 2\n"));
        assert_eq!(m.to_string(), "{a: {x: 1, y: [3], z: 1}, b: null, c: 2}");
    }
}
