//! One box acts as one: under `[server] processes = N`, the worker that answers `/status` or
//! `/metrics` asks its siblings for theirs ([`crate::siblings`], each within a deadline) and
//! answers for the whole box. `/status`: each figure combined as its entry in the one list
//! says ([`Combine`]: streams and publishes added up, the shared journal's last id the largest,
//! a failing backend failing), with `workers` listing each worker's own streams, connections
//! and memory. `/metrics`: every worker's samples, each labelled with its `worker`, under one
//! HELP and TYPE per family. A worker that does not answer in time is left out (`workers`
//! says who answered).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::figures::{Combine, HOOKS, HUB, PROCESS};
use super::Cx;

/// This worker's number and the box's worker count, when it is one of several.
fn box_of(cx: &Cx) -> Option<(usize, usize)> {
    let n = cx.config().server.processes;
    match crate::process::worker_number() {
        Some(me) if n > 1 => Some((me, n)),
        _ => None,
    }
}

/// The box's `/status`: `own` (this worker's) combined with every sibling's.
pub(super) async fn status(cx: &Cx, own: Map<String, Value>) -> Map<String, Value> {
    let Some((me, n)) = box_of(cx) else {
        return own;
    };
    let answers = crate::siblings::ask(&cx.config().journal.dir, n, me, "status").await;
    let mut docs = vec![(me, own)];
    docs.extend(answers.into_iter().filter_map(|(w, body)| {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(doc)) => Some((w, doc)),
            _ => None,
        }
    }));
    combine_status(docs, n)
}

/// The box's `/metrics`: `own` (this worker's text) merged with every sibling's.
pub(super) async fn metrics(cx: &Cx, own: String) -> String {
    let Some((me, n)) = box_of(cx) else {
        return own;
    };
    let answers = crate::siblings::ask(&cx.config().journal.dir, n, me, "metrics").await;
    let mut texts = vec![(me, own)];
    texts.extend(
        answers
            .into_iter()
            .map(|(w, body)| (w, String::from_utf8_lossy(&body).into_owned())),
    );
    texts.sort_by_key(|(w, _)| *w);
    merge_expositions(texts.iter().map(|(_, t)| t.as_str()))
}

/// The workers' documents (the answering worker's first) as the box's: the answering
/// worker's, with every figure combined, `workers` and `processes` added.
fn combine_status(
    mut docs: Vec<(usize, Map<String, Value>)>,
    processes: usize,
) -> Map<String, Value> {
    let mut out = docs[0].1.clone();
    docs.sort_by_key(|(w, _)| *w);
    let all: Vec<&Map<String, Value>> = docs.iter().map(|(_, d)| d).collect();
    let mut at = |path: Vec<&str>, how: Combine| {
        if let Some(v) = combined(&all, &path, how) {
            set(&mut out, &path, v);
        }
    };
    for f in PROCESS {
        at(f.key.split('.').collect(), f.combine);
    }
    for key in ["open_fds", "rss_bytes"] {
        at(vec![key], Combine::Sum);
    }
    for route in keys_under(&all, "topics") {
        for f in HUB {
            let path = ["topics", route.as_str()]
                .into_iter()
                .chain(f.key.split('.'));
            at(path.collect(), f.combine);
        }
    }
    for route in keys_under(&all, "hooks") {
        for f in HOOKS {
            let path = ["hooks", route.as_str()]
                .into_iter()
                .chain(f.key.split('.'));
            at(path.collect(), f.combine);
        }
    }
    for (group, list) in super::KINDS.iter().filter_map(|k| k.figures()) {
        for route in keys_under(&all, group) {
            for f in &list {
                let path = [group, route.as_str()].into_iter().chain(f.key.split('.'));
                at(path.collect(), f.combine);
            }
        }
    }
    let presence = merge_presence(&all);
    out.insert("presence".into(), presence.into());
    let workers: Vec<Value> = docs
        .iter()
        .map(|(w, d)| {
            let mut one = Map::new();
            one.insert("worker".into(), (*w).into());
            for key in [
                "pid",
                "active_streams",
                "active_connections",
                "open_fds",
                "rss_bytes",
            ] {
                if let Some(v) = d.get(key) {
                    one.insert(key.into(), v.clone());
                }
            }
            Value::Object(one)
        })
        .collect();
    out.insert("workers".into(), workers.into());
    out.insert("processes".into(), processes.into());
    out
}

/// The box's presence: each topic's subscribers added up over the workers, its users joined
/// (sorted, at most 100); `topics` is at least the largest worker's count.
fn merge_presence(docs: &[&Map<String, Value>]) -> Map<String, Value> {
    let mut out = Map::new();
    for route in keys_under(docs, "presence") {
        let mut topics = 0u64;
        let mut by: std::collections::BTreeMap<String, (u64, Option<Vec<String>>)> =
            Default::default();
        for d in docs {
            let Some(r) = get(d, &["presence", route.as_str()]) else {
                continue;
            };
            topics = topics.max(r["topics"].as_u64().unwrap_or(0));
            let Some(list) = r["by_topic"].as_object() else {
                continue;
            };
            for (topic, one) in list {
                let e = by.entry(topic.clone()).or_default();
                e.0 += one["subscribers"].as_u64().unwrap_or(0);
                if let Some(users) = one["users"].as_array() {
                    let names = e.1.get_or_insert_with(Vec::new);
                    names.extend(users.iter().filter_map(|u| u.as_str().map(String::from)));
                }
            }
        }
        let mut by_topic = Map::new();
        for (topic, (n, users)) in &by {
            let mut one = serde_json::json!({ "subscribers": n });
            if let Some(mut u) = users.clone() {
                u.sort();
                u.dedup();
                one["user_count"] = u.len().into();
                u.truncate(crate::hooks::presence::SHOWN_USERS);
                one["users"] = u.into();
            }
            by_topic.insert(topic.clone(), one);
        }
        let topics = topics.max(by.len() as u64);
        out.insert(
            route,
            serde_json::json!({ "topics": topics, "by_topic": by_topic }),
        );
    }
    out
}

/// The keys of the object at `group` in any of `docs` (routes by path), in order.
fn keys_under(docs: &[&Map<String, Value>], group: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for d in docs {
        if let Some(Value::Object(m)) = d.get(group) {
            for k in m.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    keys
}

/// The value at `path` in `doc`.
fn get<'a>(doc: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (last, inner) = path.split_last()?;
    let mut m = doc;
    for k in inner {
        m = m.get(*k)?.as_object()?;
    }
    m.get(*last)
}

/// Puts `v` at `path` in `doc`, making the objects on the way.
fn set(doc: &mut Map<String, Value>, path: &[&str], v: Value) {
    let Some((last, inner)) = path.split_last() else {
        return;
    };
    let mut m = doc;
    for k in inner {
        let entry = m
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else { return };
        m = next;
    }
    m.insert(last.to_string(), v);
}

/// The workers' readings at `path` combined `how`; `None` when no worker has one.
fn combined(docs: &[&Map<String, Value>], path: &[&str], how: Combine) -> Option<Value> {
    let values: Vec<&Value> = docs.iter().filter_map(|d| get(d, path)).collect();
    let numbers: Vec<u64> = values.iter().filter_map(|v| v.as_u64()).collect();
    if numbers.len() == values.len() && !numbers.is_empty() {
        return Some(
            match how {
                Combine::Sum => numbers.iter().fold(0u64, |a, n| a.saturating_add(*n)),
                Combine::Max => numbers.iter().copied().max().unwrap_or(0),
                Combine::Worst => numbers.iter().copied().min().unwrap_or(0),
            }
            .into(),
        );
    }
    // States (`ok`, `failing`): the worst is any that is not `ok`.
    let words: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
    let word = words
        .iter()
        .find(|w| **w != "ok")
        .or_else(|| words.first())?;
    Some(Value::String(word.to_string()))
}

/// Prometheus texts of several workers as one: each family's HELP and TYPE once, then every
/// worker's samples of it, families in the order they first appear.
fn merge_expositions<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    #[derive(Default)]
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<String>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, Family> = HashMap::new();
    for text in texts {
        let mut current = String::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let meta = line
                .strip_prefix("# HELP ")
                .map(|r| (true, r))
                .or_else(|| line.strip_prefix("# TYPE ").map(|r| (false, r)));
            if let Some((help, rest)) = meta {
                current = rest.split(' ').next().unwrap_or("").to_string();
                if !families.contains_key(&current) {
                    order.push(current.clone());
                }
                let f = families.entry(current.clone()).or_default();
                let slot = if help { &mut f.help } else { &mut f.kind };
                slot.get_or_insert_with(|| line.to_string());
                continue;
            }
            if !families.contains_key(&current) {
                order.push(current.clone());
            }
            families
                .entry(current.clone())
                .or_default()
                .samples
                .push(line.to_string());
        }
    }
    let mut out = String::new();
    for name in order {
        let Some(f) = families.remove(&name) else {
            continue;
        };
        for line in f.help.iter().chain(f.kind.iter()).chain(f.samples.iter()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn the_box_adds_up_what_workers_hold_and_takes_the_largest_of_what_they_share() {
        let a = doc(serde_json::json!({
            "up": 1, "active_streams": 3, "limits": {"max_streams": 10}, "pid": 11,
            "topics": {"/events": {"subscribers": 2, "last_id": 40, "backend": "ok"}},
            "commands": {"/c": {"running": 1, "events": 3, "mode": "shared"}}, "worker": 0
        }));
        let b = doc(serde_json::json!({
            "up": 1, "active_streams": 4, "limits": {"max_streams": 10}, "pid": 12,
            "topics": {"/events": {"subscribers": 5, "last_id": 42, "backend": "failing"}},
            "commands": {"/c": {"running": 0, "events": 4, "mode": "shared"}}, "worker": 1
        }));
        let out = combine_status(vec![(1, b), (0, a)], 2);
        assert_eq!(out["active_streams"], 7);
        assert_eq!(out["up"], 1);
        assert_eq!(out["limits"]["max_streams"], 20);
        assert_eq!(out["topics"]["/events"]["subscribers"], 7);
        assert_eq!(out["topics"]["/events"]["last_id"], 42);
        assert_eq!(out["topics"]["/events"]["backend"], "failing");
        // The program runs in one worker for the box: running is the largest, events add up.
        assert_eq!(out["commands"]["/c"]["running"], 1);
        assert_eq!(out["commands"]["/c"]["events"], 7);
        assert_eq!(out["commands"]["/c"]["mode"], "shared");
        // The answering worker's own identity, and each worker listed.
        assert_eq!(
            (out["pid"].clone(), out["worker"].clone()),
            (12.into(), 1.into())
        );
        assert_eq!(out["processes"], 2);
        let workers = out["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0]["worker"], 0);
        assert_eq!(workers[0]["active_streams"], 3);
    }

    #[test]
    fn families_appear_once_with_every_workers_samples() {
        let a = "# HELP fastsse_up 1.\n# TYPE fastsse_up gauge\nfastsse_up{worker=\"0\"} 1\n\
                 # HELP x_total X.\n# TYPE x_total counter\nx_total{worker=\"0\",route=\"/e\"} 5\n";
        let b = "# HELP fastsse_up 1.\n# TYPE fastsse_up gauge\nfastsse_up{worker=\"1\"} 1\n\
                 # HELP y Y.\n# TYPE y gauge\ny{worker=\"1\"} 2\n\
                 # HELP x_total X.\n# TYPE x_total counter\nx_total{worker=\"1\",route=\"/e\"} 6\n";
        let out = merge_expositions([a, b].into_iter());
        assert_eq!(
            out,
            "# HELP fastsse_up 1.\n# TYPE fastsse_up gauge\nfastsse_up{worker=\"0\"} 1\n\
             fastsse_up{worker=\"1\"} 1\n\
             # HELP x_total X.\n# TYPE x_total counter\nx_total{worker=\"0\",route=\"/e\"} 5\n\
             x_total{worker=\"1\",route=\"/e\"} 6\n\
             # HELP y Y.\n# TYPE y gauge\ny{worker=\"1\"} 2\n"
        );
    }
}
