//! Mercure 1.0's subscribe parameters: `match` (an exact topic; `match_exact` is the same) and
//! `match_urlpattern` (a WHATWG URL Pattern), `*` for every topic. Any other parameter whose
//! name starts with `match` is refused, as the reference hub refuses it, so a typo never
//! subscribes to nothing in silence. A subscription uses these or 0.x's `topic`, not both.

use crate::auth::pattern::{Pattern, MAX_PATTERN_BYTES};
use crate::auth::Selector;
use crate::request::parse_form;

/// Most matchers in one subscription (the reference hub's bound).
pub const MAX_MATCHERS: usize = 100;

/// A 1.0 subscription's matchers, and each as written.
#[derive(Debug)]
pub struct Matchers {
    /// What each selects.
    pub selectors: Vec<Selector>,
    /// Each as written (`*`, the topic, or the pattern), for the subscriptions API and hooks.
    pub texts: Vec<String>,
    /// The type of each: `exact` or `urlpattern`.
    pub types: Vec<String>,
}

/// The matchers of `query`: `None` when it has none (a 0.x subscription with `topic`), or why
/// they are refused (a 400). Patterns resolve against `base`; at most `max` of them.
pub fn from_query(query: &str, base: &url::Url, max: usize) -> Result<Option<Matchers>, String> {
    let mut m = Matchers {
        selectors: Vec::new(),
        texts: Vec::new(),
        types: Vec::new(),
    };
    let mut topic = false;
    for (k, v) in parse_form(query) {
        if k == "topic" {
            topic = true;
            continue;
        }
        let pattern = match k.as_str() {
            "match" | "match_exact" => false,
            "match_urlpattern" => true,
            other if other.to_ascii_lowercase().starts_with("match") => {
                return Err(format!(
                    "unknown topic matcher query parameter: {other:?} (use \"match\" or \"match_urlpattern\")"
                ))
            }
            _ => continue,
        };
        if m.texts.len() == max.min(MAX_MATCHERS) {
            return Err(format!(
                "too many matchers (max {}{})",
                max.min(MAX_MATCHERS),
                if max < MAX_MATCHERS {
                    ", max_topics"
                } else {
                    ""
                }
            ));
        }
        m.selectors.push(selector(&v, pattern, base)?);
        m.texts.push(v);
        m.types
            .push(if pattern { "urlpattern" } else { "exact" }.to_string());
    }
    if m.texts.is_empty() {
        return Ok(None);
    }
    if topic {
        return Err(
            "use topic (Mercure 0.x) or match / match_urlpattern (Mercure 1.0), not both".into(),
        );
    }
    Ok(Some(m))
}

fn selector(v: &str, pattern: bool, base: &url::Url) -> Result<Selector, String> {
    if v.is_empty() {
        return Err("a topic matcher must not be empty".into());
    }
    if v.len() > MAX_PATTERN_BYTES {
        return Err(format!("pattern too long (max {MAX_PATTERN_BYTES} bytes)"));
    }
    if v.chars().any(|c| c.is_control() || c == '\u{FFFD}') {
        return Err("topic matcher values must be valid UTF-8 without control characters".into());
    }
    if v == "*" {
        return Ok(Selector::Any);
    }
    if !pattern {
        return Ok(Selector::Exact(v.to_string()));
    }
    Pattern::parse(v, base).map(Selector::UrlPattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(query: &str) -> Result<Option<Matchers>, String> {
        from_query(query, &crate::auth::pattern::base_for(None), 16)
    }

    #[test]
    fn match_and_match_urlpattern_select_and_the_rest_is_refused() {
        assert!(q("topic=a").unwrap().is_none());
        let m = q(
            "match=https%3A%2F%2Fex.com%2F%7Bid%7D&match_urlpattern=%2Fbooks%2F%3Aid&match_exact=*",
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.texts, vec!["https://ex.com/{id}", "/books/:id", "*"]);
        // exact is exact (braces are not a template), a pattern is a pattern, * is all.
        assert!(m.selectors[0].matches("https://ex.com/{id}"));
        assert!(!m.selectors[0].matches("https://ex.com/1"));
        assert!(m.selectors[1].matches("/books/7"));
        assert!(m.selectors[2].matches("anything"));
        for (bad, says) in [
            (
                "matchFoo=a",
                "unknown topic matcher query parameter: \"matchFoo\"",
            ),
            ("MATCH=a", "unknown topic matcher"),
            ("match=a&topic=b", "not both"),
            ("match=", "must not be empty"),
            ("match=a%01b", "control characters"),
            (
                "match_urlpattern=https%3A%2F%2Fx%2F(",
                "invalid URL pattern",
            ),
        ] {
            let e = q(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("match=t{i}")).collect();
        assert!(q(&many.join("&"))
            .unwrap_err()
            .contains("too many matchers (max 16, max_topics)"));
        let long = format!("match={}", "a".repeat(MAX_PATTERN_BYTES + 1));
        assert!(q(&long).unwrap_err().contains("too long"));
    }
}
