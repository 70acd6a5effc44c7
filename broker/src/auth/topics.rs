//! Set relations between topic filters, for access rules: does a rule
//! cover every topic a subscription can receive, and could a deny rule
//! match any of them. A topic name is a filter without wildcards, so the
//! same two functions answer publish questions.
//!
//! Both follow the matching rules of MQTT section 4.7: `+` matches one
//! level, `#` any number of trailing levels (zero included, so `a/#`
//! matches `a`), and a wildcard in the first level never matches a topic
//! starting with `$` [MQTT-4.7.2-1].

/// The inner filter of a shared subscription (`$share/GROUP/FILTER`), or
/// `filter` itself.
pub fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, inner)| inner)
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether a level-0 wildcard on one side meets a `$` literal on the other:
/// no topic can match both.
fn dollar_clash(a: &str, b: &str) -> bool {
    (is_wild(a) && b.starts_with('$')) || (is_wild(b) && a.starts_with('$'))
}

/// Whether every topic matched by `filter` is matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    let r: Vec<&str> = rule.split('/').collect();
    let f: Vec<&str> = filter.split('/').collect();
    covers_at(&r, &f, 0)
}

fn covers_at(r: &[&str], f: &[&str], depth: usize) -> bool {
    match (r.first(), f.first()) {
        (None, None) => true,
        // `a/#` also matches `a`; a `#` at level 0 never matches `$` topics,
        // and `f` at level 0 is never empty here.
        (Some(&"#"), None) => true,
        (Some(&"#"), Some(fl)) => !(depth == 0 && fl.starts_with('$')),
        (None, Some(_)) | (Some(_), None) => false,
        (Some(rl), Some(fl)) => {
            if *fl == "#" {
                return false;
            }
            if depth == 0 && dollar_clash(rl, fl) {
                return false;
            }
            let level_ok = *rl == "+" || (rl == fl);
            level_ok && covers_at(&r[1..], &f[1..], depth + 1)
        }
    }
}

/// Whether some topic is matched by both `a` and `b`.
pub fn intersects(a: &str, b: &str) -> bool {
    let x: Vec<&str> = a.split('/').collect();
    let y: Vec<&str> = b.split('/').collect();
    intersects_at(&x, &y, 0)
}

fn intersects_at(a: &[&str], b: &[&str], depth: usize) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (Some(&"#"), None) | (None, Some(&"#")) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(al), Some(bl)) => {
            if depth == 0 && dollar_clash(al, bl) {
                return false;
            }
            if *al == "#" || *bl == "#" {
                return true;
            }
            let level_ok = *al == "+" || *bl == "+" || al == bl;
            level_ok && intersects_at(&a[1..], &b[1..], depth + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_follows_matching_rules() {
        let yes = [
            ("#", "a/b"),
            ("#", "#"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("a/#", "a/+/c"),
            ("a/+", "a/b"),
            ("a/+", "a/+"),
            ("+/+", "a/+"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/x"),
            ("$SYS/+", "$SYS/+"),
        ];
        for (r, f) in yes {
            assert!(covers(r, f), "{r} should cover {f}");
        }
        let no = [
            ("a/+", "a/#"),
            ("a/+", "a"),
            ("a/b", "a/+"),
            ("a", "a/#"),
            ("a/+/#", "a"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("a/b", "a/c"),
            ("a/b/c", "a/b"),
        ];
        for (r, f) in no {
            assert!(!covers(r, f), "{r} should not cover {f}");
        }
    }

    #[test]
    fn intersects_finds_shared_topics() {
        let yes = [
            ("a/#", "a"),
            ("a/secret/#", "a/#"),
            ("a/+", "+/b"),
            ("#", "x/y"),
            ("a/+/c", "a/b/+"),
            ("$SYS/#", "$SYS/+"),
            ("a/b", "a/b"),
        ];
        for (a, b) in yes {
            assert!(intersects(a, b) && intersects(b, a), "{a} ∩ {b}");
        }
        let no = [
            ("a/secret/#", "a/public/#"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("#", "$SYS/x"),
            ("+/#", "$SYS/x"),
            ("a/b", "a/c"),
        ];
        for (a, b) in no {
            assert!(!intersects(a, b) && !intersects(b, a), "{a} ∩ {b} is empty");
        }
    }

    #[test]
    fn shared_subscriptions_are_judged_by_their_filter() {
        assert_eq!(strip_share("$share/g/a/#"), "a/#");
        assert_eq!(strip_share("$share/g"), "$share/g");
        assert_eq!(strip_share("a/b"), "a/b");
    }
}
