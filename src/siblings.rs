//! What the workers of one box (`[server] processes = N`) tell each other: each worker answers
//! on a unix socket of its own, `<data dir>/.workers/<n>.sock`, one question per connection —
//! `presences <route path>` — with the active Mercure subscriptions it holds on that route, as
//! JSON. A worker asked for the box's subscriptions asks its siblings too, each within a
//! deadline, and merges: a dead worker has no socket to answer from, so it lists nothing stale.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::hub::Presence;

/// A route's subscriptions held by this worker, by route path.
pub type Lookup = Arc<dyn Fn(&str) -> Vec<Arc<Presence>> + Send + Sync>;

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

/// Answers siblings' questions as worker `me` until `shutdown`, with `presences` giving a
/// route's subscriptions. A socket left by this worker's predecessor (same number) is replaced.
pub async fn answer(data_dir: PathBuf, me: usize, presences: Lookup, shutdown: CancellationToken) {
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
                let presences = presences.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(DEADLINE, reply(stream, presences)).await;
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

async fn reply(stream: UnixStream, presences: Lookup) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_QUESTION))
        .read_line(&mut line)
        .await?;
    let Some(route) = line.trim_end().strip_prefix("presences ") else {
        return Ok(());
    };
    let list: Vec<Arc<Presence>> = presences(route);
    let list: Vec<&Presence> = list.iter().map(|p| p.as_ref()).collect();
    let body = serde_json::to_vec(&list).unwrap_or_default();
    write.write_all(&body).await?;
    write.shutdown().await
}

/// The subscriptions on `route` of every other worker of the box (`processes` in all, this one
/// being `me`), asked at once, each within [`DEADLINE`]; a worker that does not answer adds
/// nothing.
pub async fn presences(
    data_dir: &Path,
    processes: usize,
    me: usize,
    route: &str,
) -> Vec<Arc<Presence>> {
    let asks = (0..processes).filter(|&n| n != me).map(|n| {
        let path = socket_path(data_dir, n);
        let question = format!("presences {route}\n");
        async move {
            let ask = async {
                let mut s = UnixStream::connect(&path).await?;
                s.write_all(question.as_bytes()).await?;
                let mut body = Vec::new();
                s.take(MAX_ANSWER).read_to_end(&mut body).await?;
                Ok::<_, std::io::Error>(body)
            };
            match tokio::time::timeout(DEADLINE, ask).await {
                Ok(Ok(body)) => serde_json::from_slice::<Vec<Presence>>(&body).unwrap_or_default(),
                _ => Vec::new(),
            }
        }
    });
    let mut all = Vec::new();
    for list in futures_join(asks).await {
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
            payload: serde_json::Value::Null,
        });
        let answers: Lookup = {
            let one = one.clone();
            Arc::new(move |route: &str| {
                if route == "/hub" {
                    vec![one.clone()]
                } else {
                    Vec::new()
                }
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
        shutdown.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "the socket goes with the worker");
        let _ = std::fs::remove_dir_all(dir);
    }
}
