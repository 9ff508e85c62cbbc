//! The queue's bookkeeping without a sender: bytes held, order, compaction, the bound.

use super::*;
use crate::hooks::call::{new_id, now_ms};
use crate::hooks::send::Target;

fn store(queue_bytes: usize) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!("fastsse-hookstore-{}", crate::random::u64()));
    let delivery = Arc::new(Delivery {
        route: "/r".into(),
        target: Target::Fastcgi {
            addr: "unix:/nonexistent.sock".into(),
            script: "/x.php".into(),
        },
        format: Default::default(),
        timeout: Duration::from_secs(1),
        concurrency: 4,
        queue_bytes,
        secret: None,
    });
    (Store::open(dir.clone(), false, delivery).unwrap(), dir)
}

fn connect(topic: &str) -> Call {
    Call {
        id: new_id(),
        event: Event::Connect,
        route: "/r".into(),
        topics: vec![topic.into()],
        user: Some("u".into()),
        subscriber: new_id(),
        remote_addr: None,
        reason: None,
        time_ms: now_ms(),
        connected_ms: None,
    }
}

fn wait_written(s: &Store) {
    let last = s.lock().seq;
    while *s.written.borrow() < last {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn every_byte_held_is_given_back_and_the_file_stays_small() {
    let (s, dir) = store(16 << 20);
    for i in 0..4000 {
        let c = connect(&format!("room/{}", i % 7));
        let seq = s.connect(c.clone(), false).unwrap();
        s.done(seq);
        let leave = s.leave(&c.subscriber, Reason::BrowserLeft).unwrap();
        // Nothing is sent before it is written: the sender would wait for this.
        s.done(leave);
        assert!(s.leave(&c.subscriber, Reason::BrowserLeft).is_none());
    }
    assert_eq!(s.backlog(), (0, 0, 0));
    wait_written(&s);
    // Compacted along the way: far less than the ~2.5 MB written.
    let len = std::fs::metadata(&s.log.path).unwrap().len();
    assert!(len < (1 << 20) + 4096, "{len}");
    let left = crate::hooks::journal::replay(&std::fs::read(&s.log.path).unwrap());
    assert_eq!(
        (left.pending.len(), left.open.len(), left.damaged),
        (0, 0, 0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_leave_waits_for_its_connect_and_the_oldest_go_first() {
    let (s, dir) = store(16 << 20);
    let (a, b) = (connect("a"), connect("b"));
    let sa = s.connect(a.clone(), false).unwrap();
    let sb = s.connect(b.clone(), false).unwrap();
    let la = s.leave(&a.subscriber, Reason::BrowserLeft).unwrap();
    wait_written(&s);
    let (picked, _) = s.pick(10);
    let seqs: Vec<u64> = picked.iter().map(|(q, _)| *q).collect();
    // a's leave is held back while a's connect is out.
    assert_eq!(seqs, vec![sa, sb]);
    s.done(sa);
    let (picked, _) = s.pick(10);
    assert_eq!(picked.iter().map(|(q, _)| *q).collect::<Vec<_>>(), vec![la]);
    // A failed call waits out its backoff.
    s.retry_later(la);
    let (picked, next) = s.pick(10);
    assert!(picked.is_empty() && next.is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_queue_refuses_and_keeps_room_for_every_open_streams_leave() {
    let (s, dir) = store(4096);
    let mut open = Vec::new();
    loop {
        let c = connect("t");
        match s.connect(c.clone(), false) {
            Ok(_) => open.push(c),
            Err(Refused::Full) => break,
        }
    }
    assert!(!open.is_empty() && open.len() < 20, "{}", open.len());
    assert_eq!(s.stats.queue_full.load(Relaxed), 1);
    // Every open stream still gets its leave, within the bound.
    for c in &open {
        assert!(s.leave(&c.subscriber, Reason::BrowserLeft).is_some());
    }
    assert!(s.backlog().1 <= 4096, "{:?}", s.backlog());
    let _ = std::fs::remove_dir_all(dir);
}
