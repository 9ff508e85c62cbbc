//! Unit tests of the one list of figures: keys unique, families contiguous, nesting.

use super::*;

fn unique<T: ?Sized>(figures: &[Figure<T>]) {
    let mut keys = std::collections::HashSet::new();
    let mut families: Vec<&str> = Vec::new();
    for f in figures {
        assert!(keys.insert(f.key), "key {} twice", f.key);
        // A family's figures are adjacent (one HELP/TYPE each) and agree on kind and help.
        if families.last() != Some(&f.metric) {
            assert!(!families.contains(&f.metric), "{} split", f.metric);
            families.push(f.metric);
        }
        assert!(f.metric.starts_with("fastsse_"), "{}", f.metric);
        assert!(!f.help.is_empty());
    }
}

#[test]
fn every_figure_has_its_own_key_and_families_are_contiguous() {
    unique(PROCESS);
    unique(HUB);
    unique(super::super::command::FIGURES);
    for (_, _, _, key) in PHP_FPM {
        assert!(PROCESS.iter().any(|f| f.key == *key), "{key}");
    }
}

#[test]
fn dotted_keys_nest() {
    let mut doc = serde_json::Map::new();
    insert(&mut doc, "limits.max_streams", Value::Count(5));
    insert(&mut doc, "limits.max_body_bytes", Value::Count(7));
    insert(&mut doc, "backend", Value::State("ok", 1.0));
    assert_eq!(
        serde_json::Value::Object(doc),
        serde_json::json!({"limits": {"max_streams": 5, "max_body_bytes": 7}, "backend": "ok"})
    );
    assert_eq!(Value::State("failing", 0.0).metric(), 0.0);
}
