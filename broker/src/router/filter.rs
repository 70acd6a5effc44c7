//! Splitting a subscription's topic filter into what the trie stores: the
//! optional shared-subscription group (`$share/GROUP/FILTER`, MQTT 5.0
//! section 4.8.2), the literal/`+` levels of the path, and whether it ends
//! in `#`.

use super::{RouterError, MAX_TOPIC_LEVELS};
use crate::types::TopicFilter;

/// The prefix that marks a shared subscription.
const SHARE_PREFIX: &str = "$share/";

/// A topic filter taken apart for the trie.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedFilter<'a> {
    /// The share name of a shared subscription, `None` for a normal one.
    pub group: Option<&'a str>,
    /// The levels before a trailing `#` (all levels when there is none).
    pub path: Vec<&'a str>,
    /// Whether the filter ended in `#` (stored beside the path's last node).
    pub multi: bool,
}

impl<'a> ParsedFilter<'a> {
    /// Takes `filter` apart, refusing malformed shared subscriptions and
    /// filters deeper than [`MAX_TOPIC_LEVELS`].
    pub fn parse(filter: &'a TopicFilter) -> Result<Self, RouterError> {
        let (group, inner) = split_shared(filter)?;
        let mut path: Vec<&str> = inner.split('/').collect();
        if path.len() > MAX_TOPIC_LEVELS {
            return Err(RouterError::FilterTooDeep {
                filter: filter.clone(),
            });
        }
        let multi = path.last() == Some(&"#");
        if multi {
            path.pop();
        }
        Ok(ParsedFilter { group, path, multi })
    }
}

/// Splits `$share/GROUP/FILTER` into its group and filter; any other filter
/// is returned whole with no group. `$share` alone is an ordinary filter.
fn split_shared(filter: &TopicFilter) -> Result<(Option<&str>, &str), RouterError> {
    let Some(rest) = filter.as_str().strip_prefix(SHARE_PREFIX) else {
        return Ok((None, filter.as_str()));
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(RouterError::MissingSharedFilter {
            filter: filter.clone(),
        });
    };
    if group.is_empty() {
        return Err(RouterError::EmptyShareName {
            filter: filter.clone(),
        });
    }
    // `/` cannot occur (it ends the group); `+`/`#` may, as whole levels,
    // since the filter validated as an ordinary one.
    if group.contains(['+', '#']) {
        return Err(RouterError::WildcardInShareName {
            filter: filter.clone(),
        });
    }
    if inner.is_empty() {
        return Err(RouterError::MissingSharedFilter {
            filter: filter.clone(),
        });
    }
    Ok((Some(group), inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(Option<String>, Vec<String>, bool), RouterError> {
        let f = TopicFilter::new(s).expect("valid filter");
        let p = ParsedFilter::parse(&f)?;
        let path = p.path.iter().map(|l| l.to_string()).collect();
        Ok((p.group.map(str::to_owned), path, p.multi))
    }

    fn levels(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn plain_filters() {
        assert_eq!(parse("#"), Ok((None, levels(&[]), true)));
        assert_eq!(parse("/#"), Ok((None, levels(&[""]), true)));
        assert_eq!(parse("a/+/b"), Ok((None, levels(&["a", "+", "b"]), false)));
        assert_eq!(parse("a//"), Ok((None, levels(&["a", "", ""]), false)));
        assert_eq!(parse("$share"), Ok((None, levels(&["$share"]), false)));
        assert_eq!(
            parse("$sharex/g/a"),
            Ok((None, levels(&["$sharex", "g", "a"]), false))
        );
    }

    #[test]
    fn shared_filters() {
        let g = Some("g".to_owned());
        assert_eq!(parse("$share/g/a/#"), Ok((g.clone(), levels(&["a"]), true)));
        assert_eq!(parse("$share/g/#"), Ok((g.clone(), levels(&[]), true)));
        assert_eq!(parse("$share/g//"), Ok((g, levels(&["", ""]), false)));
    }

    #[test]
    fn bad_shared_filters() {
        for (s, want) in [
            ("$share/", "MissingSharedFilter"),
            ("$share/g", "MissingSharedFilter"),
            ("$share/g/", "MissingSharedFilter"),
            ("$share//a", "EmptyShareName"),
            ("$share/+/a", "WildcardInShareName"),
            ("$share/#", "MissingSharedFilter"),
        ] {
            let err = parse(s).expect_err(s);
            assert!(format!("{err:?}").starts_with(want), "{s}: {err:?}");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = vec!["a"; MAX_TOPIC_LEVELS].join("/");
        assert!(parse(&ok).is_ok());
        let deep = vec!["a"; MAX_TOPIC_LEVELS + 1].join("/");
        assert!(matches!(
            parse(&deep),
            Err(RouterError::FilterTooDeep { .. })
        ));
    }
}
