//! Fetching a JWK Set over HTTP(S) with the client `fastsse bench` and hooks use (hyper,
//! rustls with the system's roots): once while the route is built, then by a refresher task
//! per set that lives as long as the route does.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{KeySet, FETCH_TIMEOUT, MAX_BYTES};
use crate::bench::http::{parse_url, HttpClient};

/// Longest wait between two tries after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One GET of the set: its body, or why not (a status other than 200 is a failure).
async fn get(client: &HttpClient, uri: &str) -> Result<Vec<u8>, String> {
    let url = parse_url(uri)?;
    match tokio::time::timeout(FETCH_TIMEOUT, client.fetch(&url, MAX_BYTES)).await {
        Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok((200, body))) => Ok(body),
        Ok(Ok((status, _))) => Err(format!("answered {status}")),
    }
}

/// Readies the set while its route is built: from the copy kept on disk when it is younger
/// than `jwks_refresh` (a CGI request, a reload), else fetched now, blocking the calling thread
/// for at most [`FETCH_TIMEOUT`] (a thread of its own with a runtime of its own, so it works on
/// and off a runtime). A failed fetch falls back to a kept copy up to [`super::KEPT_FALLBACK`]
/// old; else the set waits for the refresher and its tokens get 503.
pub fn fetch_now(set: &KeySet) {
    if let Some(kept) = set.load_kept(set.refresh) {
        if set.install(Ok(kept)).is_ok() {
            return;
        }
    }
    let uri = set.uri.clone();
    let body = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let body = rt.block_on(async { get(&HttpClient::plain()?, &uri).await });
        // A name lookup still running (a hung resolver) is not waited for.
        rt.shutdown_background();
        body
    })
    .join()
    .unwrap_or_else(|_| Err("the fetch thread panicked".into()));
    let fetched = body.clone();
    match set.install(body) {
        Ok(n) => {
            log::info!("jwks {}: {n} key(s)", set.shown);
            if let Ok(b) = fetched {
                set.keep(&b);
            }
        }
        Err(e) => {
            let kept = set.load_kept(super::KEPT_FALLBACK);
            let from_disk = kept.is_some_and(|k| set.install(Ok(k)).is_ok());
            let then = if from_disk {
                "using the copy kept on disk until a retry succeeds"
            } else {
                "its tokens get 503 until a retry succeeds"
            };
            log::warn!(
                "jwks {}: cannot fetch the issuer's keys: {e}; {then}",
                set.shown
            );
        }
    }
}

/// Starts the set's refresher on the current runtime (once; none without a runtime, as in a
/// CGI request, which fetched the set while it was built).
pub fn start(set: &Arc<KeySet>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if set.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    rt.spawn(refresher(Arc::downgrade(set), set.wake.clone()));
}

/// Fetches the set every `refresh` (or when woken), retrying a failure after 1 s, 2 s, 4 s …
/// up to [`MAX_BACKOFF`]; ends once the route that holds the set is gone.
async fn refresher(set: Weak<KeySet>, wake: Arc<tokio::sync::Notify>) {
    let client = match HttpClient::plain() {
        Ok(c) => c,
        Err(e) => {
            log::error!("jwks: no HTTP client ({e}): the issuer's keys are not refreshed");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let (uri, shown, mut wait, mut failed) = match set.upgrade() {
        Some(s) => {
            let failed = s
                .held
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .error
                .is_some();
            (
                s.uri.clone(),
                s.shown.clone(),
                if failed { backoff } else { s.refresh },
                failed,
            )
        }
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
        // A route a reload replaced fetches nothing more.
        if set.strong_count() == 0 {
            return;
        }
        let body = get(&client, &uri).await;
        let Some(s) = set.upgrade() else {
            return;
        };
        let fetched = body.clone();
        match s.install(body) {
            Ok(n) => {
                if let Ok(b) = fetched {
                    let kept = s.clone();
                    tokio::task::spawn_blocking(move || kept.keep(&b));
                }
                if failed {
                    log::info!("jwks {shown}: fetched again, {n} key(s)");
                }
                failed = false;
                backoff = Duration::from_secs(1);
                wait = s.refresh;
            }
            Err(e) => {
                if !failed {
                    log::warn!("jwks {shown}: cannot fetch the issuer's keys: {e}; keeping the ones held, retrying");
                }
                failed = true;
                wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
