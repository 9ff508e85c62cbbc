//! What the workers of one box (`[server] processes = N`) tell each other: each worker answers
//! on a unix socket of its own, `<data dir>/.workers/<n>.sock`, one question per connection —
//! `presences <route path>` (the active Mercure subscriptions it holds on that route, as JSON),
//! `status` (its own `/status` document), `metrics` (its own `/metrics` text). A worker asked
//! for the box's figures or subscriptions asks its siblings too, each within a deadline, and
//! merges: a dead worker has no socket to answer from, so it adds nothing stale.
//!
//! One question stays open: `follow <route path>`, asked of the worker that runs a shared
//! command's program (worker 0) by a worker whose subscribers want it. The connection counts
//! as a subscriber there (the program runs while any worker wants it), and carries the
//! program's live events, each a length-prefixed frame, until either side closes it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::hub::Presence;

/// This worker's answer to a sibling's question (the line, without its newline).
pub type Answerer =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// An answer: a body (empty for a question this worker does not know), or a feed to follow.
pub enum Reply {
    /// Written at once, within the deadline.
    Body(Vec<u8>),
    /// Events written as they come, until the asker closes or the feed ends.
    Follow(Follow),
}

/// A shared program's live events for a sibling, and what counts it as a subscriber while it
/// is held.
pub struct Follow {
    /// The events, encoded.
    pub events: tokio::sync::broadcast::Receiver<bytes::Bytes>,
    /// Dropped when the follower leaves.
    pub guard: Box<dyn Send + Sync>,
}

/// How long a sibling has to answer (connect, ask, read).
const DEADLINE: Duration = Duration::from_secs(1);
/// Largest answer read from a sibling.
const MAX_ANSWER: u64 = 16 << 20;
/// Longest question line.
const MAX_QUESTION: u64 = 4096;

/// Where worker `n` of the box whose data directory is `data_dir` answers.
pub fn socket_path(data_dir: &Path, n: usize) -> PathBuf {
    data_dir.join(".workers").join(format!("{n}.sock"))
}

/// Answers siblings' questions as worker `me` until `shutdown`, with `answers`. A socket left by
/// this worker's predecessor (same number) is replaced.
pub async fn answer(data_dir: PathBuf, me: usize, answers: Answerer, shutdown: CancellationToken) {
    let path = socket_path(&data_dir, me);
    let bound = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // Subscriptions carry their tokens' payloads: for this user's processes only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent().unwrap_or(Path::new(".")))?;
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path)?;
        l.set_nonblocking(true)?;
        let inode = std::fs::metadata(&path)?.ino();
        Ok::<_, std::io::Error>((l, path, inode))
    })
    .await;
    let (listener, path, inode) = match bound {
        Ok(Ok((l, path, inode))) => match UnixListener::from_std(l) {
            Ok(l) => (l, path, inode),
            Err(e) => return log::warn!("worker {me}: cannot answer siblings: {e}"),
        },
        Ok(Err(e)) => {
            return log::warn!(
                "worker {me}: cannot answer siblings in {}: {e}; the subscriptions API lists this worker's only",
                data_dir.display()
            )
        }
        Err(_) => return,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let answers = answers.clone();
                tokio::spawn(async move {
                    let _ = reply(stream, answers).await;
                });
            }
        }
    }
    // After an upgrade the path may be a new worker's socket already: remove ours only.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(&path).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(path);
    }
}

async fn reply(stream: UnixStream, answers: Answerer) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut read = BufReader::new(read.take(MAX_QUESTION));
    tokio::time::timeout(DEADLINE, read.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    match answers(line.trim_end().to_string()).await {
        Reply::Body(body) => tokio::time::timeout(DEADLINE, async {
            write.write_all(&body).await?;
            write.shutdown().await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        Reply::Follow(mut f) => {
            let mut rest = [0u8; 1];
            loop {
                tokio::select! {
                    ev = f.events.recv() => {
                        // Behind by a whole queue (or the program's route is gone): the
                        // follower reconnects, as a slow subscriber is cut off.
                        let Ok(ev) = ev else { return Ok(()) };
                        let mut frame = bytes::BytesMut::new();
                        feed_codec().encode(ev, &mut frame)?;
                        tokio::time::timeout(DEADLINE, write.write_all(&frame))
                            .await
                            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    }
                    // The follower closes when it has no subscriber left.
                    _ = read.read(&mut rest) => return Ok(()),
                }
            }
        }
    }
}

/// Follows the feed of `route` at worker `runner` of the box: each event as it comes, to
/// `each`, until the feed ends (`Ok`), cannot be reached (`Err`), or `stop` returns true
/// (checked every second).
pub async fn follow(
    data_dir: &Path,
    runner: usize,
    route: &str,
    mut each: impl FnMut(bytes::Bytes),
    mut stop: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let path = socket_path(data_dir, runner);
    let mut s = tokio::time::timeout(DEADLINE, UnixStream::connect(&path))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.write_all(format!("follow {route}\n").as_bytes()).await?;
    let mut codec = feed_codec();
    let mut buf = bytes::BytesMut::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        while let Some(ev) = codec.decode(&mut buf)? {
            each(ev.freeze());
        }
        tokio::select! {
            // `read_buf` keeps what it read when the tick wins: no frame is ever cut.
            r = s.read_buf(&mut buf) => {
                if r? == 0 {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                if stop() {
                    return Ok(());
                }
            }
        }
    }
}

/// The framing of a feed: each event after its length (4 bytes, big-endian), at most
/// [`MAX_ANSWER`] bytes.
fn feed_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_ANSWER as usize)
        .new_codec()
}

/// This worker's subscriptions on `route`, as a sibling reads them.
pub fn presences_answer(list: &[Arc<Presence>]) -> Vec<u8> {
    let list: Vec<&Presence> = list.iter().map(|p| p.as_ref()).collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

/// Asks every other worker of the box (`processes` in all, this one being `me`) `question`, at
/// once, each within [`DEADLINE`]: the answers, by worker number. A worker that does not
/// answer (or answers nothing) is left out.
pub async fn ask(
    data_dir: &Path,
    processes: usize,
    me: usize,
    question: &str,
) -> Vec<(usize, Vec<u8>)> {
    let asks = (0..processes).filter(|&n| n != me).map(|n| {
        let path = socket_path(data_dir, n);
        let question = format!("{question}\n");
        async move {
            let ask = async {
                let mut s = UnixStream::connect(&path).await?;
                s.write_all(question.as_bytes()).await?;
                let mut body = Vec::new();
                s.take(MAX_ANSWER).read_to_end(&mut body).await?;
                Ok::<_, std::io::Error>(body)
            };
            match tokio::time::timeout(DEADLINE, ask).await {
                Ok(Ok(body)) if !body.is_empty() => Some((n, body)),
                _ => None,
            }
        }
    });
    futures_join(asks).await.into_iter().flatten().collect()
}

/// The subscriptions on `route` of every other worker of the box.
pub async fn presences(
    data_dir: &Path,
    processes: usize,
    me: usize,
    route: &str,
) -> Vec<Arc<Presence>> {
    let question = format!("presences {route}");
    let mut all = Vec::new();
    for (_, body) in ask(data_dir, processes, me, &question).await {
        let list = serde_json::from_slice::<Vec<Presence>>(&body).unwrap_or_default();
        all.extend(list.into_iter().map(Arc::new));
    }
    all
}

/// Runs every future at once; their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_hears_its_siblings_and_not_the_dead() {
        let dir = std::env::temp_dir().join(format!("fastsse-siblings-{}", std::process::id()));
        let shutdown = CancellationToken::new();
        let one = Arc::new(Presence {
            subscriber: "urn:uuid:1".into(),
            topics: vec!["a".into()],
            match_types: Vec::new(),
            payload: serde_json::Value::Null,
        });
        let answers: Answerer = {
            let one = one.clone();
            Arc::new(move |question: String| {
                let one = one.clone();
                Box::pin(async move {
                    Reply::Body(match question.strip_prefix("presences ") {
                        Some("/hub") => presences_answer(&[one]),
                        Some(_) => presences_answer(&[]),
                        None => Vec::new(),
                    })
                })
            })
        };
        let server = tokio::spawn(answer(dir.clone(), 1, answers, shutdown.clone()));
        let path = socket_path(&dir, 1);
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Worker 0 asks workers 1 (alive) and 2 (never started).
        let got = presences(&dir, 3, 0, "/hub").await;
        assert_eq!(got.len(), 1);
        assert_eq!(*got[0], *one);
        assert!(presences(&dir, 3, 0, "/other").await.is_empty());
        assert!(
            ask(&dir, 3, 0, "what").await.is_empty(),
            "an unknown question: no answer"
        );
        shutdown.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "the socket goes with the worker");
        let _ = std::fs::remove_dir_all(dir);
    }
}
