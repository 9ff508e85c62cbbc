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
        published: None,
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
            Err(e) => {
                assert_eq!(e, Refused::Full);
                break;
            }
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

#[test]
fn a_compaction_with_calls_out_replays_to_what_is_left() {
    let (s, dir) = store(16 << 20);
    let (a, b) = (connect("a"), connect("b"));
    let sa = s.connect(a.clone(), false).unwrap();
    s.done(sa); // a is open, its connect made
    let _sb = s.connect(b.clone(), false).unwrap(); // b's connect still out
    let c = connect("c");
    let sc = s.connect(c.clone(), false).unwrap();
    s.lock().compact_at = 0;
    // Compacts: a and c open, b's connect pending. The snapshot's mark is the last call's,
    // written already: wait for the file itself.
    s.done(sc);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read(&s.log.path).unwrap();
        if text.starts_with(b"{\"op\":\"open\"") || std::time::Instant::now() > until {
            break text;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let left = crate::hooks::journal::replay(&text);
    assert_eq!(left.pending, vec![b.clone()]);
    let mut open: Vec<String> = left.open.iter().map(|c| c.id.clone()).collect();
    open.sort();
    let mut want = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    want.sort();
    assert_eq!(open, want);
    // Each line once.
    let lines: Vec<&[u8]> = text
        .split(|x| *x == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 3, "{}", String::from_utf8_lossy(&text));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_403_to_a_connect_whose_stream_is_open_is_final_and_its_leave_follows() {
    use crate::hooks::send::Answer;
    let (s, dir) = store(16 << 20);
    let a = connect("a");
    let sa = s.connect(a.clone(), false).unwrap();
    let la = s.leave(&a.subscriber, Reason::BrowserLeft).unwrap();
    wait_written(&s);
    let (picked, _) = s.pick(10);
    assert_eq!(picked.len(), 1);
    let refused = |status| {
        Outcome::Answered(Answer {
            status,
            body: b"no".to_vec(),
        })
    };
    // A 401 (a secret that does not match) is tried again; the leave waits.
    s.settle(sa, &a, refused(401));
    assert!(s.lock().pending.contains_key(&sa));
    s.lock().pending.get_mut(&sa).unwrap().not_before = Instant::now();
    let (picked, _) = s.pick(10);
    assert_eq!(picked.iter().map(|p| p.0).collect::<Vec<_>>(), vec![sa]);
    // A 403 is the application's answer: made, and the leave goes next.
    s.settle(sa, &a, refused(403));
    assert_eq!(s.stats.refused_open.load(Relaxed), 1);
    let (picked, _) = s.pick(10);
    assert_eq!(picked.iter().map(|p| p.0).collect::<Vec<_>>(), vec![la]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn leaves_held_back_do_not_hide_calls_that_can_go() {
    let (s, dir) = store(1 << 30);
    // SCAN streams whose connects are out (in flight): their leaves wait.
    let mut leaves = 0;
    for _ in 0..SCAN {
        let c = connect("x");
        s.connect(c.clone(), true).unwrap();
        s.leave(&c.subscriber, Reason::BrowserLeft).unwrap();
        leaves += 1;
    }
    let late = connect("late");
    let sl = s.connect(late, false).unwrap();
    wait_written(&s);
    let (picked, _) = s.pick(10);
    assert_eq!(
        picked.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![sl],
        "{leaves}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn after_close_no_stream_opens_and_an_orphan_is_taken_once() {
    let (s, dir) = store(16 << 20);
    // An orphan: a process that held stream `a` and died.
    let (tx, mut rx) = tokio::sync::watch::channel(0);
    let dead = crate::hooks::journal::OwnLog::create(&dir, false, tx, |_| {}).unwrap();
    let a = connect("a");
    dead.tx
        .send(Op::Append {
            bytes: Line::Open { call: a.clone() }.encode(),
            seq: 1,
        })
        .unwrap();
    while *rx.borrow_and_update() < 1 {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(dead);
    s.adopt();
    s.adopt();
    let pending: Vec<Call> = s.lock().pending.values().map(|p| p.call.clone()).collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].id, crate::hooks::call::leave_id(&a.id));
    assert_eq!(pending[0].reason.as_deref(), Some("process_died"));
    s.close(Duration::from_secs(5));
    assert_eq!(s.connect(connect("b"), false), Err(Refused::Closed));
    // Something is left to send: the file stays for the next process.
    assert!(s.log.path.exists());
    let _ = std::fs::remove_dir_all(dir);
}
