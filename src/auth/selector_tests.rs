//! Unit tests of selectors: exact, `*`, URI templates, the linear matcher against the old one.

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

/// The matcher this one replaced (quadratic per part), kept as the oracle.
fn reference(t: &Template, topic: &str) -> bool {
    let t_ = topic.as_bytes();
    let mut reach = vec![false; t_.len() + 1];
    reach[0] = true;
    for part in &t.parts {
        let mut next = vec![false; t_.len() + 1];
        for from in (0..=t_.len()).filter(|&i| reach[i]) {
            match part {
                Part::Literal(l) => {
                    if t_[from..].starts_with(l.as_bytes()) {
                        next[from + l.len()] = true;
                    }
                }
                Part::Expr(op, _) => {
                    next[from] = true;
                    let start = match op {
                        '\0' | '+' => from,
                        _ if t_.get(from) == Some(&prefix(*op)) => from + 1,
                        _ => continue,
                    };
                    for (end, &b) in t_.iter().enumerate().skip(start) {
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
    reach[t_.len()]
}

#[test]
fn agrees_with_the_reference_on_random_templates_and_topics() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let pieces = [
        "a", "ab", "aa", "/", ".", "?x=", "&", "@", "#", "{x}", "{+x}", "{#x}", "{/x}", "{.x}",
        "{;x}", "{?x}", "{&x}", "{x,y}",
    ];
    let chars = [
        "a", "b", "/", ".", "?", "=", "&", "@", "#", ";", ",", "%", " ", "é",
    ];
    let mut hits = 0;
    for _ in 0..20_000 {
        let template: String = (0..1 + rnd(6)).map(|_| pieces[rnd(pieces.len())]).collect();
        let topic: String = (0..rnd(10)).map(|_| chars[rnd(chars.len())]).collect();
        let Some(t) = Template::parse(&template) else {
            continue;
        };
        let want = reference(&t, &topic);
        hits += want as usize;
        assert_eq!(t.matches(&topic), want, "{template} vs {topic:?}");
    }
    assert!(hits > 500, "the cases should match often too ({hits})");
}

#[test]
fn overlapping_literals_are_all_found() {
    assert_eq!(occurrences(b"aa", b"aaaa").collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(occurrences(b"aba", b"ababa").collect::<Vec<_>>(), [0, 2]);
    assert!(m("{+a}aa{+b}", "aaa"));
    assert!(!m("{x}aa", "ab"));
}

#[test]
fn hostile_templates_cost_linear_time() {
    // The hostile pass's selector: 32 reserved expansions, then a literal that never
    // matches, against a 256-byte topic; its quadratic predecessor took ~1 ms per match.
    let evil = Selector::parse(&format!("{}Q0", "{+a}".repeat(32)));
    assert!(matches!(evil, Selector::Template(_)));
    let topic = "t".repeat(256);
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        assert!(!evil.matches(&topic));
    }
    // ~33 passes over 256 bytes each: well under a millisecond per match even unoptimized.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn covers_is_the_shape_whatever_the_values() {
    let t = Selector::parse("user/{user}/inbox");
    for topic in [
        "user/alice/inbox",
        "user/alice@example.com/inbox",
        "user/a b/inbox",
        "user/a/b/inbox",
        "user//inbox",
        "user/é/inbox",
    ] {
        assert!(t.covers(topic), "{topic}");
    }
    assert!(!t.matches("user/alice@example.com/inbox"));
    for topic in ["user/alice", "users/alice/inbox", "user/alice/inbox/x"] {
        assert!(!t.covers(topic), "{topic}");
    }
    assert!(Selector::parse("{a}").covers(""));
    assert!(Selector::parse("exact").covers("exact") && !Selector::parse("exact").covers("x"));
}

#[test]
fn any_of_several() {
    let sel = [Selector::parse("a"), Selector::parse("b/{x}")];
    assert!(any_matches(&sel, &["z".into(), "b/1".into()]));
    assert!(!any_matches(&sel, &["z".into()]));
    assert!(!any_matches(&[], &["a".into()]));
}
