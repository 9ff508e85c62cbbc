//! Mercure 1.0's URL Pattern matcher (`match_urlpattern`, and `match_type: "urlpattern"` in a
//! token's grants): a WHATWG URL Pattern (`https://example.com/books/:id`, `/books/*`) compiled
//! once by the `urlpattern` crate, tested against a topic parsed as a URL. Relative patterns
//! and topics are resolved against one base URL (the hub's `resource_identifier` when it ends
//! in `/.well-known/mercure`, else `http://mercure.invalid/`, as the reference hub does), so a
//! relative pattern matches relative topics. A topic that is not a URL never matches.

use std::sync::Arc;

use urlpattern::regexp::RegExp;
use urlpattern::{
    RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions,
};

/// Most bytes one compiled regexp of a pattern may take (the regex crate's `size_limit`, and
/// its lazy DFA's): a pattern is 8 of them, and a client's `(\w{400})` group would otherwise
/// compile to megabytes.
const REGEX_BYTES: usize = 16 * 1024;

/// The regex crate under a size bound, as the URL Pattern's regexp engine.
pub struct Bounded(regex::Regex);

impl RegExp for Bounded {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_BYTES)
            .dfa_size_limit(REGEX_BYTES)
            .build()
            .map(Bounded)
            .map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let c = self.0.captures(text)?;
        Some(c.iter().skip(1).map(|m| m.map(|m| m.as_str())).collect())
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

/// Longest pattern accepted (bytes), as Mercure's hub.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// The base URL when the route pins no resource identifier.
pub const DEFAULT_BASE: &str = "http://mercure.invalid/";

/// A compiled pattern and its text (two patterns are the same when their texts are).
pub struct Pattern {
    text: String,
    base: url::Url,
    compiled: UrlPattern<Bounded>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UrlPattern({:?})", self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.base == other.base
    }
}

impl Eq for Pattern {}

/// The base URL patterns and topics of a route resolve against.
pub fn base_for(resource_identifier: Option<&str>) -> url::Url {
    resource_identifier
        .filter(|r| r.trim_end_matches('/').ends_with("/.well-known/mercure"))
        .and_then(|r| url::Url::parse(r).ok())
        .unwrap_or_else(|| url::Url::parse(DEFAULT_BASE).expect("the default base parses"))
}

impl Pattern {
    /// The base URL it resolves against.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// Compiles `text` against `base`, or says why it is not a pattern.
    pub fn parse(text: &str, base: &url::Url) -> Result<Arc<Pattern>, String> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(format!("pattern too long (max {MAX_PATTERN_BYTES} bytes)"));
        }
        let init = UrlPatternInit::parse_constructor_string::<Bounded>(text, Some(base.clone()))
            .map_err(|e| format!("invalid URL pattern `{text}`: {e}"))?;
        let compiled = UrlPattern::<Bounded>::parse(init, UrlPatternOptions::default())
            .map_err(|e| format!("invalid URL pattern `{text}`: {e}"))?;
        Ok(Arc::new(Pattern {
            text: text.to_string(),
            base: base.clone(),
            compiled,
        }))
    }

    /// Whether `topic`, read as a URL (relative ones against the base), is matched.
    pub fn matches(&self, topic: &str) -> bool {
        let Ok(url) = url::Url::options().base_url(Some(&self.base)).parse(topic) else {
            return false;
        };
        self.compiled
            .test(UrlPatternMatchInput::Url(url))
            .unwrap_or(false)
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, topic: &str) -> bool {
        Pattern::parse(pattern, &base_for(None))
            .unwrap()
            .matches(topic)
    }

    /// Cases in the shape of the URL Pattern standard's examples; every expectation was
    /// checked against an independent implementation (npm `urlpattern-polyfill` 10, the same
    /// pattern, topic and base).
    #[test]
    fn patterns_match_as_the_standard_says() {
        // Named groups match one path segment.
        assert!(m(
            "https://example.com/books/:id",
            "https://example.com/books/1"
        ));
        assert!(!m(
            "https://example.com/books/:id",
            "https://example.com/books/1/x"
        ));
        assert!(!m(
            "https://example.com/books/:id",
            "https://example.com/books/"
        ));
        // `*` matches anything, across segments.
        assert!(m(
            "https://example.com/books/*",
            "https://example.com/books/1/reviews"
        ));
        // Optional groups and regexp groups.
        assert!(m("/books/:id?", "/books"));
        assert!(m("/books/:id(\\d+)", "/books/42"));
        assert!(!m("/books/:id(\\d+)", "/books/abc"));
        // The hostname is a component too; wildcards in it.
        assert!(m(
            "https://*.example.com/foo",
            "https://api.example.com/foo"
        ));
        assert!(!m("https://*.example.com/foo", "https://example.org/foo"));
        // Relative patterns match relative topics (one base), not another host's.
        assert!(m("/users/:name", "/users/alice"));
        assert!(!m("/users/:name", "https://example.com/users/alice"));
        // Case-sensitive paths; a topic that is not a URL never matches.
        assert!(!m("/Books/:id", "/books/1"));
        assert!(!m("https://example.com/:id", "http://[::1"));
        // The search component: unspecified in an absolute pattern's constructor string it
        // is a wildcard, as the standard's parser makes it.
        assert!(m(
            "https://example.com/books/:id",
            "https://example.com/books/1?x=1"
        ));
        assert!(m("/books/:id", "/books/1?x=1"));
        assert!(m("/books/:id", "/books/1#frag"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let base = base_for(None);
        assert!(Pattern::parse("https://example.com/(", &base).is_err());
        // A group that would compile to megabytes is refused.
        assert!(Pattern::parse("https://x/:a(\\w{400})", &base).is_err());
        let long = format!("/{}", "a".repeat(MAX_PATTERN_BYTES));
        assert!(Pattern::parse(&long, &base)
            .unwrap_err()
            .contains("too long"));
        // A pinned resource identifier at /.well-known/mercure is the base.
        let pinned = base_for(Some("https://hub.example.com/.well-known/mercure"));
        let p = Pattern::parse("/books/:id", &pinned).unwrap();
        assert!(p.matches("https://hub.example.com/books/1"));
        assert!(p.matches("/books/1"));
    }
}
