//! Mercure topic selectors, pure: `*` (every topic), an exact string, or an RFC 6570 URI
//! template (`https://example.com/books/{id}`) that matches the topics it could expand to. Used
//! for what a subscriber asks for (`?topic=`) and for what a token allows (`mercure.publish`,
//! `mercure.subscribe`).
//!
//! Template matching follows the expansion rules of RFC 6570 backwards: a simple `{var}` (and
//! `.`, `/`, `;`, `?`, `&` expressions) matches one or more unreserved or percent-encoded
//! characters (commas too, for lists), `{+var}` and `{#var}` match any characters. An
//! expression may also match nothing (an undefined variable expands to nothing). Matching is
//! dynamic programming over (part, position): linear in the template's size times the topic's
//! length squared, never exponential.

/// Longest template or topic matched against one (longer ones never match a template).
pub const MAX_LEN: usize = 2048;
/// Most expressions in one template.
const MAX_EXPRESSIONS: usize = 32;

/// One selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// Exactly this topic.
    Exact(String),
    /// A URI template.
    Template(Template),
}

/// A parsed URI template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// An expression: its operator (`\0` for none) and how many variables it names.
    Expr(char, usize),
}

impl Selector {
    /// Parses a selector. A string with `{` that is not a valid template is an exact topic
    /// (Mercure does the same: a malformed template matches only itself).
    pub fn parse(s: &str) -> Selector {
        if s == "*" {
            return Selector::Any;
        }
        match Template::parse(s) {
            Some(t) => Selector::Template(t),
            None => Selector::Exact(s.to_string()),
        }
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(s) => s == topic,
            Selector::Template(t) => t.text == topic || t.matches(topic),
        }
    }

    /// The exact topic, when this selector is one.
    pub fn exact(&self) -> Option<&str> {
        match self {
            Selector::Exact(s) => Some(s),
            _ => None,
        }
    }
}

/// Whether any of `selectors` selects any of `topics`.
pub fn any_matches(selectors: &[Selector], topics: &[String]) -> bool {
    selectors
        .iter()
        .any(|s| topics.iter().any(|t| s.matches(t)))
}

impl Template {
    /// Parses a URI template; `None` when `s` has no expression or is malformed.
    pub fn parse(s: &str) -> Option<Template> {
        if !s.contains('{') || s.len() > MAX_LEN {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            if literal.contains('}') {
                return None;
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_string()));
            }
            let close = rest[open..].find('}')? + open;
            let body = &rest[open + 1..close];
            let (op, vars) = match body.chars().next()? {
                c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (c, &body[1..]),
                _ => ('\0', body),
            };
            let names: Vec<&str> = vars.split(',').collect();
            let valid_name = |n: &str| {
                let n = n.strip_suffix('*').unwrap_or(n);
                let n = n.split_once(':').map_or(n, |(n, len)| {
                    if len.is_empty() || len.len() > 4 || !len.bytes().all(|b| b.is_ascii_digit()) {
                        ""
                    } else {
                        n
                    }
                });
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%')
            };
            if !names.iter().all(|n| valid_name(n)) {
                return None;
            }
            parts.push(Part::Expr(op, names.len()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return None;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let expressions = parts.iter().filter(|p| matches!(p, Part::Expr(..))).count();
        (expressions <= MAX_EXPRESSIONS).then(|| Template {
            text: s.to_string(),
            parts,
        })
    }

    /// Whether `topic` is one of this template's expansions.
    pub fn matches(&self, topic: &str) -> bool {
        let t = topic.as_bytes();
        if t.len() > MAX_LEN {
            return false;
        }
        // reach[i]: positions in `topic` where part i can start.
        let mut reach = vec![false; t.len() + 1];
        reach[0] = true;
        for part in &self.parts {
            let mut next = vec![false; t.len() + 1];
            for from in (0..=t.len()).filter(|&i| reach[i]) {
                match part {
                    Part::Literal(l) => {
                        if t[from..].starts_with(l.as_bytes()) {
                            next[from + l.len()] = true;
                        }
                    }
                    Part::Expr(op, _) => {
                        // An undefined variable expands to nothing.
                        next[from] = true;
                        let start = match op {
                            '\0' | '+' => from,
                            _ if t.get(from) == Some(&prefix(*op)) => from + 1,
                            _ => continue,
                        };
                        for (end, &b) in t.iter().enumerate().skip(start) {
                            if !allowed(*op, b) {
                                break;
                            }
                            next[end + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        reach[t.len()]
    }
}

/// The character an operator's expansion starts with.
fn prefix(op: char) -> u8 {
    match op {
        '#' => b'#',
        '.' => b'.',
        '/' => b'/',
        ';' => b';',
        '?' => b'?',
        '&' => b'&',
        _ => 0,
    }
}

/// Whether byte `b` may appear in an expansion of an expression with operator `op`.
fn allowed(op: char, b: u8) -> bool {
    let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%');
    match op {
        // Reserved expansion: unreserved and reserved characters (RFC 3986 gen- and sub-delims).
        '+' | '#' => {
            unreserved
                || matches!(
                    b,
                    b':' | b'/'
                        | b'?'
                        | b'#'
                        | b'['
                        | b']'
                        | b'@'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
                || b >= 0x80
        }
        // Lists and exploded values repeat the operator's separator.
        '.' | '/' => unreserved || b == b',' || b == prefix(op),
        ';' | '?' | '&' => unreserved || matches!(b, b',' | b'=' | b';' | b'&'),
        _ => unreserved || b == b',',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(selector: &str, topic: &str) -> bool {
        Selector::parse(selector).matches(topic)
    }

    #[test]
    fn any_exact_and_simple_templates() {
        assert!(m("*", "https://example.com/books/1"));
        assert!(m(
            "https://example.com/books/1",
            "https://example.com/books/1"
        ));
        assert!(!m(
            "https://example.com/books/1",
            "https://example.com/books/12"
        ));
        let t = "https://example.com/books/{id}";
        assert!(m(t, "https://example.com/books/42"));
        assert!(m(t, "https://example.com/books/a%20b"));
        assert!(
            !m(t, "https://example.com/books/42/reviews"),
            "simple never matches '/'"
        );
        assert!(!m(t, "https://example.com/authors/42"));
        assert!(m(t, t), "a template selects itself as a topic");
        assert!(m("users/{user}/orders", "users/alice/orders"));
        assert!(!m("users/{user}/orders", "users/alice/bob/orders"));
    }

    #[test]
    fn operators() {
        assert!(m(
            "https://example.com{+path}",
            "https://example.com/a/b?c=d"
        ));
        assert!(m(
            "https://example.com/books{/id}",
            "https://example.com/books/1"
        ));
        assert!(m(
            "https://example.com/books{/id}",
            "https://example.com/books"
        ));
        assert!(!m(
            "https://example.com/books{/id}",
            "https://example.com/books-1"
        ));
        assert!(m(
            "https://example.com/b{?x,y}",
            "https://example.com/b?x=1&y=2"
        ));
        assert!(m(
            "https://example.com/b{#frag}",
            "https://example.com/b#a/b"
        ));
        assert!(m("file{.ext}", "file.json"));
        assert!(m("/x{;p}", "/x;p=1"));
        assert!(m("/x{?a}{&b}", "/x?a=1&b=2"));
    }

    #[test]
    fn malformed_templates_are_exact_topics() {
        for s in ["a{", "a}", "a{}", "a{b c}", "{x:abc}", "a{b}}"] {
            assert_eq!(Selector::parse(s), Selector::Exact(s.into()), "{s}");
            assert!(m(s, s));
        }
        let many = "{a}".repeat(MAX_EXPRESSIONS + 1);
        assert!(matches!(Selector::parse(&many), Selector::Exact(_)));
    }

    #[test]
    fn long_inputs_stay_cheap() {
        let t = Selector::parse(&"{a}x".repeat(MAX_EXPRESSIONS));
        let topic = "y".repeat(MAX_LEN);
        let start = std::time::Instant::now();
        assert!(!t.matches(&topic));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert!(!m("{+a}", &"z".repeat(MAX_LEN + 1)));
    }

    #[test]
    fn any_of_several() {
        let sel = [Selector::parse("a"), Selector::parse("b/{x}")];
        assert!(any_matches(&sel, &["z".into(), "b/1".into()]));
        assert!(!any_matches(&sel, &["z".into()]));
        assert!(!any_matches(&[], &["a".into()]));
    }
}
