//! The ACL file: which topics a client may publish to and subscribe to.
//!
//! ```text
//! # Rules before the first `user` line apply to every client.
//! topic read $SYS/#
//! pattern readwrite devices/%c/#
//!
//! user alice
//! topic readwrite sensors/#
//! topic deny sensors/secret/#
//! ```
//!
//! - `topic [ACCESS] FILTER`: a rule on a topic filter (wildcards allowed);
//!   `ACCESS` is `read`, `write`, `readwrite` (the default) or `deny`.
//! - `pattern [ACCESS] FILTER`: the same, with `%u` replaced by the
//!   username and `%c` by the client id. A pattern does not apply to a
//!   client whose substituted value is missing (no username) or contains
//!   `/`, `+` or `#`, so no one can widen a pattern by choosing a name.
//! - `user NAME`: the rules that follow, until the next `user` line, apply
//!   only to the client authenticated as `NAME`.
//!
//! A client's rules are the default rules plus its user section. Order
//! does not matter: **deny wins** (any matching `deny` rule refuses), then
//! any rule granting the access allows, and otherwise the answer is
//! "no rule" (refused, unless an HTTP hook is asked).
//!
//! A publish to `T` needs a `write` or `readwrite` rule matching `T`. A
//! subscription to `F` needs one `read` or `readwrite` rule whose filter
//! covers every topic `F` can match, and no `deny` rule that could match
//! any of them: alice above may subscribe to `sensors/kitchen/+` but not
//! to `sensors/#` or `sensors/+/temp` (both could match
//! `sensors/secret/temp`). Shared subscriptions are judged by their inner
//! filter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::topics::{covers, intersects, strip_share};
use super::ClientCtx;
use crate::types::TopicFilter;

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("ACL file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What an access rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// The answer of the rules to one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No rule matched.
    NoMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
    /// `%u`/`%c` are substituted per client.
    pattern: bool,
}

/// Parsed ACL rules.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    default: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
}

enum Question<'a> {
    Publish(&'a str),
    Subscribe(&'a str),
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|error| AclError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Acl::parse(&text, path)
    }

    /// Parses ACL text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| AclError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" if rest.is_empty() => return Err(err("`user` needs a name".into())),
                "user" => {
                    acl.users.entry(rest.to_string()).or_default();
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest, keyword == "pattern").map_err(err)?;
                    match &user {
                        Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        None => acl.default.push(rule),
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword `{other}` (expected topic, pattern or user)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Whether `client` may publish to `topic`.
    pub fn can_publish(&self, client: &ClientCtx, topic: &str) -> bool {
        self.check_publish(client, topic) == Decision::Allow
    }

    /// Whether `client` may subscribe to `filter`: only if it may read
    /// every topic the filter can match.
    pub fn can_subscribe(&self, client: &ClientCtx, filter: &str) -> bool {
        self.check_subscribe(client, filter) == Decision::Allow
    }

    pub fn check_publish(&self, client: &ClientCtx, topic: &str) -> Decision {
        self.decide(client, &Question::Publish(topic))
    }

    pub fn check_subscribe(&self, client: &ClientCtx, filter: &str) -> Decision {
        self.decide(client, &Question::Subscribe(strip_share(filter)))
    }

    fn decide(&self, client: &ClientCtx, q: &Question<'_>) -> Decision {
        let own = client
            .username
            .as_deref()
            .and_then(|u| self.users.get(u))
            .map_or(&[][..], Vec::as_slice);
        let mut granted = false;
        for rule in self.default.iter().chain(own) {
            let Some(filter) = resolve(rule, client) else {
                continue;
            };
            let (hit, grants) = match q {
                Question::Publish(t) => (
                    intersects(&filter, t),
                    covers(&filter, t) && rule.access.writes(),
                ),
                Question::Subscribe(f) => (
                    intersects(&filter, f),
                    covers(&filter, f) && rule.access.reads(),
                ),
            };
            if rule.access == Access::Deny && hit {
                return Decision::Deny;
            }
            granted |= grants;
        }
        if granted {
            Decision::Allow
        } else {
            Decision::NoMatch
        }
    }
}

/// Parses `[ACCESS] FILTER`.
fn parse_rule(rest: &str, pattern: bool) -> Result<Rule, String> {
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (access, filter) = match Access::parse(first) {
        Some(a) => (a, after.trim()),
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a rule needs a topic filter".into());
    }
    let check = if pattern {
        substitute(filter, "u", "c").ok_or_else(|| {
            format!("pattern `{filter}`: `%` must be followed by u (username) or c (client id)")
        })?
    } else {
        filter.to_string()
    };
    TopicFilter::new(&check).map_err(|e| format!("topic filter `{filter}`: {e}"))?;
    Ok(Rule {
        access,
        filter: filter.to_string(),
        pattern,
    })
}

/// The rule's filter for `client`; `None` when a pattern cannot apply.
fn resolve(rule: &Rule, client: &ClientCtx) -> Option<String> {
    if !rule.pattern {
        return Some(rule.filter.clone());
    }
    let safe = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#']);
    let user = client.username.as_deref().filter(|u| safe(u));
    let id = Some(&*client.client_id).filter(|c| safe(c));
    let needs_user = rule.filter.contains("%u");
    let needs_id = rule.filter.contains("%c");
    if (needs_user && user.is_none()) || (needs_id && id.is_none()) {
        return None;
    }
    substitute(&rule.filter, user.unwrap_or(""), id.unwrap_or(""))
}

/// Replaces `%u` and `%c`; `None` on any other `%` sequence.
fn substitute(filter: &str, user: &str, client_id: &str) -> Option<String> {
    let mut out = String::with_capacity(filter.len());
    let mut chars = filter.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('c') => out.push_str(client_id),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# defaults
topic read $SYS/broker/#
pattern readwrite devices/%c/#
pattern read users/%u/inbox/#
topic public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic write commands/+/set

user bob
topic read sensors/+/temp
";

    fn acl() -> Acl {
        Acl::parse(ACL, Path::new("acl")).unwrap()
    }

    fn client(id: &str, user: Option<&str>) -> ClientCtx {
        ClientCtx::new(id, user.map(str::to_string), "test")
    }

    #[test]
    fn user_rules_and_deny_wins() {
        let a = acl();
        let alice = client("a1", Some("alice"));
        assert!(a.can_publish(&alice, "sensors/kitchen/temp"));
        assert!(!a.can_publish(&alice, "sensors/secret/key"));
        assert!(a.can_subscribe(&alice, "sensors/kitchen/+"));
        assert!(
            !a.can_subscribe(&alice, "sensors/#"),
            "overlaps the deny rule"
        );
        assert!(
            !a.can_subscribe(&alice, "sensors/+/temp"),
            "may match sensors/secret/temp"
        );
        assert!(!a.can_subscribe(&alice, "sensors/secret/key"));
        assert!(a.can_publish(&alice, "commands/door/set"));
        assert!(!a.can_subscribe(&alice, "commands/door/set"), "write only");
        assert!(!a.can_publish(&alice, "other"));
    }

    #[test]
    fn subscriptions_need_full_read_coverage() {
        let a = acl();
        let bob = client("b1", Some("bob"));
        assert!(a.can_subscribe(&bob, "sensors/kitchen/temp"));
        assert!(a.can_subscribe(&bob, "sensors/+/temp"));
        assert!(!a.can_subscribe(&bob, "sensors/#"));
        assert!(!a.can_subscribe(&bob, "sensors/+/+"));
        assert!(!a.can_publish(&bob, "sensors/kitchen/temp"), "read only");
        assert!(a.can_subscribe(&bob, "$share/g/sensors/+/temp"));
        assert!(!a.can_subscribe(&bob, "#"));
    }

    #[test]
    fn defaults_apply_to_everyone_including_anonymous() {
        let a = acl();
        let anon = client("anon-1", None);
        assert!(a.can_subscribe(&anon, "$SYS/broker/#"));
        assert!(!a.can_publish(&anon, "$SYS/broker/x"));
        assert!(
            a.can_publish(&anon, "public/x"),
            "access defaults to readwrite"
        );
        assert!(a.can_subscribe(&client("x", Some("alice")), "public/#"));
        assert!(!a.can_subscribe(&anon, "sensors/+/temp"));
    }

    #[test]
    fn patterns_substitute_safely() {
        let a = acl();
        let c = client("dev42", Some("carol"));
        assert!(a.can_publish(&c, "devices/dev42/state"));
        assert!(a.can_subscribe(&c, "devices/dev42/#"));
        assert!(!a.can_publish(&c, "devices/dev43/state"));
        assert!(a.can_subscribe(&c, "users/carol/inbox/#"));
        assert!(!a.can_publish(&c, "users/carol/inbox/x"));
        // No username: %u patterns do not apply.
        assert!(!a.can_subscribe(&client("dev42", None), "users//inbox/#"));
        // Wildcards or separators in a name never widen a pattern.
        assert!(!a.can_subscribe(&client("#", None), "devices/#"));
        assert!(!a.can_publish(&client("a/b", None), "devices/a/b/x"));
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let cases = [
            ("topic\n", "line 1"),
            ("user\n", "line 1"),
            ("# c\nbogus x\n", "line 2"),
            ("topic read a/#/b\n", "line 1"),
            ("pattern read a/%x\n", "line 1"),
        ];
        for (text, want) in cases {
            let e = Acl::parse(text, Path::new("acl.conf"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("acl.conf") && e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn empty_acl_allows_nothing() {
        let a = Acl::parse("", Path::new("acl")).unwrap();
        let c = client("c", Some("u"));
        assert_eq!(a.check_publish(&c, "x"), Decision::NoMatch);
        assert!(!a.can_subscribe(&c, "x"));
    }

    /// The example of `docs/security.md`, section 5.
    #[test]
    fn documented_example_holds() {
        let text = "topic read $SYS/broker/#\npattern readwrite devices/%u/#\nuser operator\ntopic read devices/#\ntopic write commands/#\ntopic deny devices/+/secrets/#\n";
        let a = Acl::parse(text, Path::new("acl")).unwrap();
        let op = client("console", Some("operator"));
        assert!(a.can_subscribe(&op, "devices/+/temp"));
        assert!(!a.can_subscribe(&op, "devices/#"));
        assert!(a.can_publish(&op, "commands/dev-1/reboot"));
        let dev = client("d1", Some("device-001"));
        assert!(a.can_publish(&dev, "devices/device-001/temp"));
        assert!(!a.can_publish(&dev, "devices/device-002/temp"));
        assert!(a.can_subscribe(&dev, "$SYS/broker/uptime"));
        assert!(!a.can_subscribe(&client("anon", None), "devices/+/temp"));
    }
}
