//! Namespaces: where an entry lives, and the patterns a token's grants are written in.
//!
//! Every entry is stored under (namespace, key). A token may write the namespaces its write
//! patterns match and reads its read list in order; a client names the namespace it writes
//! ([`crate::api::NAMESPACE_HEADER`]), and a batch get looks there first, then in the token's
//! read fallbacks. A pattern is a namespace name (`main`), a prefix pattern (`pr/*`, every
//! namespace under `pr/`) or `*` (every namespace).

/// The namespace of every entry and token from before namespaces existed, and of clients that
/// name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest namespace name or pattern.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// Why a namespace name or pattern is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a valid namespace{what}: use 1 to 128 of the characters A-Z a-z 0-9 . _ - /, \
     starting with a letter or digit, with no empty part between slashes (e.g. main, release, \
     pr/1234){pattern_hint}"
)]
pub struct NamespaceError {
    text: String,
    what: &'static str,
    pattern_hint: &'static str,
}

/// Checks a namespace name.
pub fn validate_namespace(name: &str) -> Result<(), NamespaceError> {
    let bad = || NamespaceError {
        text: name.to_owned(),
        what: "",
        pattern_hint: "",
    };
    if name.is_empty() || name.len() > MAX_NAMESPACE_LEN {
        return Err(bad());
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() || name.ends_with('/') || name.contains("//") {
        return Err(bad());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(bad());
    }
    Ok(())
}

/// A grant: a namespace name, `PREFIX/*` or `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamespacePattern {
    /// Exactly this namespace.
    Exact(String),
    /// Every namespace that starts with this prefix (which ends in `/`).
    Prefix(String),
    /// Every namespace.
    Any,
}

impl NamespacePattern {
    /// Whether `namespace` is covered by this pattern.
    pub fn matches(&self, namespace: &str) -> bool {
        match self {
            NamespacePattern::Exact(name) => name == namespace,
            NamespacePattern::Prefix(prefix) => {
                namespace.len() > prefix.len() && namespace.starts_with(prefix.as_str())
            }
            NamespacePattern::Any => true,
        }
    }

    /// The namespace this pattern names, when it names exactly one.
    pub fn exact(&self) -> Option<&str> {
        match self {
            NamespacePattern::Exact(name) => Some(name),
            _ => None,
        }
    }
}

impl std::str::FromStr for NamespacePattern {
    type Err = NamespaceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "*" {
            return Ok(NamespacePattern::Any);
        }
        if let Some(prefix) = text.strip_suffix("/*") {
            validate_namespace(prefix).map_err(|_| NamespaceError {
                text: text.to_owned(),
                what: " pattern",
                pattern_hint: "; a pattern is a name, PREFIX/* or *",
            })?;
            return Ok(NamespacePattern::Prefix(format!("{prefix}/")));
        }
        validate_namespace(text).map_err(|_| NamespaceError {
            text: text.to_owned(),
            what: " pattern",
            pattern_hint: "; a pattern is a name, PREFIX/* or *",
        })?;
        Ok(NamespacePattern::Exact(text.to_owned()))
    }
}

impl std::fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamespacePattern::Exact(name) => f.write_str(name),
            NamespacePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            NamespacePattern::Any => f.write_str("*"),
        }
    }
}

/// Parses a comma-separated list of patterns (blank items ignored), as the command line and the
/// database write them.
pub fn parse_patterns(list: &str) -> Result<Vec<NamespacePattern>, NamespaceError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The comma-separated form of `patterns` ([`parse_patterns`] reads it back).
pub fn join_patterns(patterns: &[NamespacePattern]) -> String {
    patterns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["main", "pr/1234", "release-1.2", "a", "team_x/feature.y"] {
            assert!(validate_namespace(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "a//b",
            "*",
            "pr/*",
            "a b",
            "é",
            "-x",
            &"x".repeat(129),
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let pr: NamespacePattern = "pr/*".parse().unwrap();
        assert!(pr.matches("pr/1") && pr.matches("pr/1/2"));
        assert!(!pr.matches("pr") && !pr.matches("pr/") && !pr.matches("prx/1"));
        let main: NamespacePattern = "main".parse().unwrap();
        assert!(main.matches("main") && !main.matches("main/x"));
        assert!("*".parse::<NamespacePattern>().unwrap().matches("anything"));
        assert!("pr/**".parse::<NamespacePattern>().is_err());
        assert!("*/x".parse::<NamespacePattern>().is_err());
        let list = parse_patterns("main, pr/*,,*").unwrap();
        assert_eq!(join_patterns(&list), "main,pr/*,*");
        assert_eq!(parse_patterns("").unwrap(), vec![]);
    }
}
