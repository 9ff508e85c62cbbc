//! Tests of the journal writer: ids across reopen, torn tails and damage, two writers, the
//! lock deadline, a replaced directory, and batches meeting a full tmpfs.
use super::super::record::encode_record;
use super::super::test_support::{publication, settings, tmp};
use super::super::{read_all, JournalReader, JournalRecord, Publication};
use super::*;
use std::io::Write;
use std::path::Path;

fn ids(r: Vec<Result<u64, JournalError>>) -> Vec<u64> {
    r.into_iter().map(|r| r.unwrap()).collect()
}

fn all(dir: &Path) -> Vec<JournalRecord> {
    let mut v = Vec::new();
    read_all(dir, CorruptionPolicy::Skip, |r| v.push(r)).unwrap();
    v
}

fn data(dir: &Path) -> Vec<String> {
    all(dir).into_iter().map(|r| r.data).collect()
}

fn newest_segment(dir: &Path) -> PathBuf {
    let segs = list_segments(dir).unwrap();
    dir.join(segment_name(*segs.last().unwrap()))
}

#[test]
fn ids_continue_across_reopen_and_a_torn_tail_is_cut_without_reusing_its_ids() {
    let dir = tmp("reopen");
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(
        ids(w.append(&[publication("1"), publication("2")])),
        vec![1, 2]
    );
    drop(w);
    // A writer killed mid-record leaves half a record behind.
    let half = encode_record(&JournalRecord {
        id: 3,
        unix_ms: 0,
        topics: vec!["a".into()],
        event: None,
        retry_ms: None,
        data: "torn".into(),
        ..Default::default()
    })
    .unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(segment_name(1)))
        .unwrap();
    f.write_all(&half[..half.len() - 2]).unwrap();
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    // Id 3 may have reached a subscriber before the writer died: it is not issued again.
    assert!(w.last_id() >= 3, "last id {}", w.last_id());
    let next = ids(w.append(&[publication("3")]))[0];
    assert!(next > 3);
    assert_eq!(data(&dir), vec!["1", "2", "3"]);
    // The reservation holds for a process that opens the journal afterwards.
    let mut other = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(ids(other.append(&[publication("4")])), vec![next + 1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flipped_byte_mid_segment_is_skipped_and_no_later_id_is_reissued() {
    let dir = tmp("flip");
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    let batch: Vec<Publication> = (0..40)
        .map(|i| publication(&format!("event {i}")))
        .collect();
    assert_eq!(ids(w.append(&batch)), (1..=40).collect::<Vec<_>>());
    drop(w);
    let seg = newest_segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(w.last_id(), 40, "the records after the damage still count");
    assert_eq!(ids(w.append(&[publication("next")])), vec![41]);
    let kept = all(&dir);
    assert_eq!(
        kept.len(),
        40,
        "one record lost to the flipped byte, 39 + 1 kept"
    );
    assert_eq!(kept.last().unwrap().id, 41);
    let mut refuse = settings(&dir);
    refuse.on_corruption = CorruptionPolicy::Refuse;
    match JournalWriter::open(refuse) {
        Err(JournalError::Damaged { offset, .. }) => assert!(offset > 0),
        other => panic!("expected Damaged, got {:?}", other.map(|w| w.last_id())),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_writers_interleave_without_reusing_ids_and_a_reader_follows_segments() {
    let dir = tmp("two");
    let mut s = settings(&dir);
    s.segment_bytes = 200;
    let mut a = JournalWriter::open(s.clone()).unwrap();
    let mut b = JournalWriter::open(s).unwrap();
    let mut reader = JournalReader::at(&dir, 0, 0, 0);
    let mut got = Vec::new();
    for i in 0..20 {
        let w = if i % 3 == 0 { &mut b } else { &mut a };
        got.extend(ids(w.append(&[publication(&format!("{i}"))])));
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    assert!(list_segments(&dir).unwrap().len() > 2);
    let batch = reader.read_new().unwrap();
    assert!(batch.damage.is_empty());
    let seen: Vec<u64> = batch.records.iter().map(|r| r.id).collect();
    assert_eq!(seen, got);
    assert!(reader.read_new().unwrap().records.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_newest_segment_reserves_the_ids_before_its_name() {
    let dir = tmp("empty-newest");
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    let three = [publication("1"), publication("2"), publication("3")];
    assert_eq!(ids(w.append(&three)), vec![1, 2, 3]);
    // Another writer rolled to a segment starting at id 10 and died before writing to it.
    File::create(dir.join(segment_name(10))).unwrap();
    assert_eq!(ids(w.append(&[publication("x")])), vec![10]);
    let mut fresh = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(ids(fresh.append(&[publication("y")])), vec![11]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_started_at_the_writers_position_sees_every_later_record() {
    let dir = tmp("position");
    let mut s = settings(&dir);
    s.segment_bytes = 120;
    let mut w = JournalWriter::open(s.clone()).unwrap();
    w.append(&[publication("before")]);
    let (seg, off) = w.position();
    let mut reader = JournalReader::at(&dir, seg, off, w.last_id());
    let mut other = JournalWriter::open(s).unwrap();
    let mut want = Vec::new();
    let mut seen = Vec::new();
    for i in 0..30 {
        want.extend(ids(other.append(&[publication(&format!("after {i}"))])));
        if i % 7 == 0 {
            seen.extend(reader.read_new().unwrap().records.into_iter().map(|r| r.id));
        }
    }
    seen.extend(reader.read_new().unwrap().records.into_iter().map(|r| r.id));
    assert_eq!(seen, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_by_size_keeps_the_newest_segments() {
    let dir = tmp("retain");
    let mut s = settings(&dir);
    s.segment_bytes = 100;
    s.max_bytes = 300;
    let mut w = JournalWriter::open(s).unwrap();
    for i in 0..50 {
        w.append(&[publication(&format!("event {i}"))]);
    }
    let kept = all(&dir);
    assert!(
        kept.len() < 50 && kept.last().unwrap().id == 50,
        "{} kept",
        kept.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_held_lock_makes_appends_fail_as_busy_after_the_timeout_and_store_nothing() {
    let dir = tmp("lock");
    let mut s = settings(&dir);
    s.lock_timeout = Duration::from_millis(200);
    let mut w = JournalWriter::open(s.clone()).unwrap();
    let holder = File::open(dir.join(LOCK_FILE)).unwrap();
    let held = Flock::lock(holder, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let t = Instant::now();
    let r = w.append(&[publication("a"), publication("b")]);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(r
        .iter()
        .all(|r| matches!(r, Err(JournalError::LockTimeout(_)))));
    drop(held);
    assert_eq!(ids(w.append(&[publication("c")])), vec![1]);
    assert_eq!(data(&dir), vec!["c"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_replaced_directory_is_reopened_and_ids_continue() {
    let dir = tmp("replaced");
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(
        ids(w.append(&[publication("1"), publication("2")])),
        vec![1, 2]
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let next = ids(w.append(&[publication("after")]))[0];
    assert!(next > 2, "id {next} reissued");
    assert_eq!(data(&dir), vec!["after"]);
    // Another process (the CLI) opening the new directory continues after it too.
    let mut cli = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(ids(cli.append(&[publication("cli")])), vec![next + 1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_floor_reserves_ids_for_every_later_writer() {
    let dir = tmp("floor");
    drop(JournalWriter::open_at_least(settings(&dir), 500).unwrap());
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    assert_eq!(ids(w.append(&[publication("x")])), vec![501]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mounts a 256 KiB tmpfs at `dir` for the life of the guard (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let root = nix::unistd::Uid::effective().is_root();
        if !root {
            assert!(
                std::env::var_os("FASTSSE_REQUIRE_PEERS").is_none(),
                "mounting a tmpfs needs root"
            );
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success());
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_batch_that_meets_a_full_disk_is_stored_whole_or_not_at_all() {
    for policy in [FsyncPolicy::Batch, FsyncPolicy::Never, FsyncPolicy::Always] {
        let dir = tmp(&format!("full-{policy:?}"));
        let Some(_mnt) = Tmpfs::mount(&dir) else {
            return;
        };
        let mut s = settings(&dir);
        s.fsync = policy;
        let mut w = JournalWriter::open(s).unwrap();
        // Leave a little room, then append batches of 2 KiB events until refused.
        std::fs::write(dir.join("filler"), vec![0u8; 200 * 1024]).unwrap_or(());
        let mut answered = Vec::new();
        for round in 0..40 {
            let batch: Vec<Publication> = (0..8)
                .map(|i| publication(&format!("{round}-{i}-{}", "d".repeat(2048))))
                .collect();
            let results = w.append(&batch);
            let refused = results.iter().any(|r| r.is_err());
            answered.extend(batch.into_iter().zip(results));
            if refused {
                break;
            }
        }
        let refused: Vec<&Publication> = answered
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(p, _)| p)
            .collect();
        assert!(!refused.is_empty(), "{policy:?}: the disk never filled");
        let stored: Vec<(u64, String)> = answered
            .iter()
            .filter_map(|(p, r)| r.as_ref().ok().map(|id| (*id, p.data.clone())))
            .collect();
        // Free the disk so a fresh open can read everything back.
        std::fs::remove_file(dir.join("filler")).unwrap();
        let kept: Vec<(u64, String)> = all(&dir).into_iter().map(|r| (r.id, r.data)).collect();
        assert_eq!(
            kept, stored,
            "{policy:?}: the journal holds other events than the acknowledged ones"
        );
        // And the writer goes on: the next append is stored and takes a new id.
        let next = ids(w.append(&[publication("after")]))[0];
        assert!(next > stored.last().map_or(0, |s| s.0));
    }
}

#[test]
fn a_damaged_last_record_is_kept_as_damage_and_reported_as_a_hole() {
    let dir = tmp("last-damaged");
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    let five: Vec<Publication> = (0..5).map(|i| publication(&format!("e{i}"))).collect();
    assert_eq!(ids(w.append(&five)), vec![1, 2, 3, 4, 5]);
    drop(w);
    let seg = dir.join(segment_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    *bytes.last_mut().unwrap() ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let mut w = JournalWriter::open(settings(&dir)).unwrap();
    assert!(w.last_id() >= 5);
    assert_eq!(
        std::fs::read(&seg).unwrap().len(),
        bytes.len(),
        "damage is kept, not cut"
    );
    let next = ids(w.append(&[publication("next")]))[0];
    assert!(next > 5);
    let mut got = Vec::new();
    let damage = read_all(&dir, CorruptionPolicy::Skip, |r| got.push(r.id)).unwrap();
    assert_eq!(got, vec![1, 2, 3, 4, next]);
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].after_id, 4);
    assert!(damage[0].next_id > 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_after_skips_whole_segments_below_the_id_and_hands_out_only_later_records() {
    let dir = tmp("read-after");
    let mut s = settings(&dir);
    s.segment_bytes = 300;
    let mut w = JournalWriter::open(s).unwrap();
    for i in 0..40 {
        w.append(&[publication(&format!("{i:0>60}"))]);
    }
    drop(w);
    let segs = list_segments(&dir).unwrap();
    assert!(segs.len() > 5, "{segs:?}");
    // Damage in the first segment: reading from past it never opens that segment.
    let first = dir.join(segment_name(segs[0]));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    for after in [segs[2] - 1, segs[2], 25, 39, 40, u64::MAX] {
        let mut got = Vec::new();
        let damage =
            super::super::read_after(&dir, CorruptionPolicy::Skip, after, |r| got.push(r.id))
                .unwrap();
        let want: Vec<u64> = (1..=40).filter(|&id| id > after).collect();
        assert_eq!(got, want, "after {after}");
        assert!(damage.is_empty(), "after {after}: {damage:?}");
    }
    let mut got = Vec::new();
    let damage = read_all(&dir, CorruptionPolicy::Skip, |r| got.push(r.id)).unwrap();
    assert_eq!(damage.len(), 1);
    assert!(got.len() < 40 && got.ends_with(&[39, 40]));
    let _ = std::fs::remove_dir_all(&dir);
}
