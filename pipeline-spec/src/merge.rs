//! GitLab's deep merge, used by `include`, `extends` and `default`.

use crate::yaml::{Node, Value};

/// Merges `over` onto `base`: when both are maps, keys merge recursively (existing keys keep
/// their place, new keys are appended); otherwise `over` replaces `base`, lists included.
/// A `null` in `over` replaces too, which is how an extending job unsets an inherited key.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (k, e) in *o {
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

/// The same result as `deep_merge(base.clone(), over)`, written into `over`: keys keep GitLab's
/// order (the base's first, then the new ones), but only what `over` lacks is copied from
/// `base`. `extends` applies templates to a thousand jobs, and cloning whole templates
/// dominated loading.
pub fn merge_under(over: &mut Node, base: &Node) {
    let (Value::Map(o), Value::Map(b)) = (&mut over.value, &base.value) else { return };
    for (i, (k, be)) in b.iter().enumerate() {
        let at = match o.get_index_of(k) {
            Some(at) => {
                merge_under(&mut o[at].value, &be.value);
                at
            }
            None => o.insert_full(k.clone(), be.clone()).0,
        };
        // Base keys come first, in the base's order; the job's own keys keep their order after.
        if at != i {
            o.move_index(at, i);
        }
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

    #[test]
    fn merge_under_fills_only_what_is_missing() {
        let mut over = y("a: {y: [3], z: 1}\nb: null\nc: 2\n");
        merge_under(&mut over, &y("a: {x: 1, y: [1, 2]}\nb: 1\nd: 4\n"));
        assert_eq!(over.to_string(), "{a: {x: 1, y: [3], z: 1}, b: null, d: 4, c: 2}");
    }
}
