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
    /// A WHATWG URL Pattern (Mercure 1.0's `match_urlpattern`).
    UrlPattern(std::sync::Arc<super::pattern::Pattern>),
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
            Selector::UrlPattern(p) => p.matches(topic),
        }
    }

    /// The selector as written (`*`, the topic, or the template).
    pub fn text(&self) -> &str {
        match self {
            Selector::Any => "*",
            Selector::Exact(s) => s,
            Selector::Template(t) => &t.text,
            Selector::UrlPattern(p) => p.text(),
        }
    }

    /// What decides which topics it matches: its kind, its text and, for a URL Pattern, the
    /// base it resolves against (two alike with different bases match differently).
    pub fn identity(&self) -> (std::mem::Discriminant<Selector>, &str, &str) {
        let base = match self {
            Selector::UrlPattern(p) => p.base(),
            _ => "",
        };
        (std::mem::discriminant(self), self.text(), base)
    }

    /// Whether `topic` is this selector's, or would be for some value of its template's
    /// variables however they were written ([`Template::covers`]).
    pub fn covers(&self, topic: &str) -> bool {
        match self {
            Selector::Template(t) => t.covers(topic),
            other => other.matches(topic),
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

    /// Whether `topic` is one of this template's expansions. Each part is one linear pass
    /// over the topic: O(parts × topic + template) in all, whatever the template's shape.
    pub fn matches(&self, topic: &str) -> bool {
        topic.len() <= MAX_LEN && self.walk(topic.as_bytes(), expand)
    }

    /// Whether `topic` has this template's shape: its literal parts in order, anything (even
    /// nothing) in place of each expression. Broader than [`Template::matches`]: what a guard
    /// needs, since a topic that *some* value could be written into must never pass as public.
    pub fn covers(&self, topic: &str) -> bool {
        self.walk(topic.as_bytes(), |_, _, reach, next| {
            let mut open = false;
            for (n, &r) in next.iter_mut().zip(reach) {
                open |= r;
                *n = open;
            }
        })
    }

    /// Walks the parts over `t`: `reach[i]` says where the next part can start; a literal
    /// moves it past each of its occurrences, `expr` says where an expression can end.
    fn walk(&self, t: &[u8], expr: impl Fn(char, &[u8], &[bool], &mut [bool])) -> bool {
        let mut reach = vec![false; t.len() + 1];
        reach[0] = true;
        for part in &self.parts {
            let mut next = vec![false; t.len() + 1];
            match part {
                Part::Literal(l) => {
                    for at in occurrences(l.as_bytes(), t) {
                        next[at + l.len()] |= reach[at];
                    }
                }
                Part::Expr(op, _) => expr(*op, t, &reach, &mut next),
            }
            if !next.contains(&true) {
                return false;
            }
            reach = next;
        }
        reach[t.len()]
    }
}

/// One expression's step: from every reachable position, where an expansion of `op` can end.
/// One pass: `open` says whether a value that started earlier is still going at byte `j`.
fn expand(op: char, t: &[u8], reach: &[bool], next: &mut [bool]) {
    let prefixed = !matches!(op, '\0' | '+');
    let mut open = false;
    for (j, &b) in t.iter().enumerate() {
        // A value starts at j: right where the part may start, or after the operator's prefix.
        let starts = if prefixed {
            j > 0 && reach[j - 1] && t[j - 1] == prefix(op)
        } else {
            reach[j]
        };
        open = (open || starts) && allowed(op, b);
        if open {
            next[j + 1] = true;
        }
    }
    // An undefined variable expands to nothing.
    for (n, &r) in next.iter_mut().zip(reach) {
        *n |= r;
    }
}

/// Every position where `needle` starts in `hay`, overlapping ones too (Knuth–Morris–Pratt:
/// linear in both lengths).
fn occurrences<'a>(needle: &'a [u8], hay: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    // fail[i]: length of the longest proper border of needle[..=i].
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut k = 0;
    hay.iter().enumerate().filter_map(move |(i, &b)| {
        if needle.is_empty() {
            return None;
        }
        while k > 0 && b != needle[k] {
            k = fail[k - 1];
        }
        if b == needle[k] {
            k += 1;
        }
        (k == needle.len()).then(|| {
            k = fail[k - 1];
            i + 1 - needle.len()
        })
    })
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
#[path = "selector_tests.rs"]
mod tests;
