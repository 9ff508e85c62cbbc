//! Unit tests of a route's authorization (`route.rs`).

use super::*;

#[test]
fn user_topics_must_fill_in_the_user_exactly() {
    for ok in [
        "user/{user}",
        "u/{+user}/inbox",
        "u/{user}/{id}",
        "https://x/{user}{?q}",
    ] {
        assert!(check_user_topics(&[ok.to_string()]).is_ok(), "{ok}");
    }
    for bad in [
        "user/{/user}",
        "user/{user:3}",
        "user/{#user}",
        "user/{user,x}",
        "user/{username}",
        "user/{user*}",
        "user/alice",
        "user/{id}",
        "user/{user",
    ] {
        assert!(check_user_topics(&[bad.to_string()]).is_err(), "{bad}");
    }
}

const KEY: &str = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

/// A route taking subscriber tokens signed with [`KEY`], with a token cache of `cache` bytes.
fn auth(cache: usize) -> RouteAuth {
    RouteAuth::new(AuthSettings {
        publisher_key: None,
        subscriber_key: Some((KEY, "HS256")),
        jwt_audience: &[],
        cookie_name: "mercureAuthorization",
        publish_origins: &[],
        user_param: None,
        user_topics: &[],
        token_cache_bytes: cache,
    })
    .unwrap()
}

/// A subscriber token for every topic, signed with [`KEY`].
fn token() -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"mercure": {"subscribe": ["*"]}}),
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap()
}

/// A GET, with `Authorization: Bearer <token>` when given.
fn req(token: Option<&str>) -> Request {
    let mut vars = vec![("REQUEST_METHOD", "GET".to_string())];
    if let Some(t) = token {
        vars.push(("HTTP_AUTHORIZATION", format!("Bearer {t}")));
    }
    let vars = vars
        .into_iter()
        .map(|(k, v)| (bytes::Bytes::from(k), bytes::Bytes::from(v)))
        .collect();
    Request::from_vars(
        vars,
        bytes::Bytes::new(),
        crate::request::PathFrom::RequestUri,
    )
}

#[test]
fn a_subscriber_s_claims_are_at_hand_without_a_token_or_once_verified() {
    let token = token();
    let a = auth(1 << 20);
    assert!(matches!(
        a.subscriber_claims_at_hand(&req(None)),
        Some(Ok(None))
    ));
    let with = req(Some(&token));
    assert!(
        a.subscriber_claims_at_hand(&with).is_none(),
        "not verified yet"
    );
    assert!(a.subscriber_claims(&with).unwrap().is_some());
    assert!(matches!(
        a.subscriber_claims_at_hand(&with),
        Some(Ok(Some(_)))
    ));
    // A bad token is never at hand: it is checked (and refused) every time.
    let bad = req(Some("not.a.token"));
    assert!(a.subscriber_claims(&bad).is_err());
    assert!(a.subscriber_claims_at_hand(&bad).is_none());
    // Without a cache, every token is checked.
    let none = auth(0);
    assert!(none.subscriber_claims(&with).unwrap().is_some());
    assert!(none.subscriber_claims_at_hand(&with).is_none());
}

/// `verified` checks a token it has not seen on the blocking pool, never on the runtime's
/// thread: with the pool's one thread held, a first-seen token waits (the runtime goes on),
/// while a request without a token, or with one verified before, is answered at once.
#[test]
fn tokens_are_verified_off_the_runtime_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let a = Arc::new(auth(1 << 20));
    let (without, with) = (req(None), req(Some(&token())));
    rt.block_on(async {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = started.send(());
            let _ = held.recv();
        });
        running.await.unwrap();
        let now = |f| tokio::time::timeout(std::time::Duration::from_millis(50), f);
        let none = now(a.verified(&without, Role::Subscriber)).await;
        assert!(matches!(none, Ok(Ok(None))), "no token: answered at once");
        let first = now(a.verified(&with, Role::Subscriber)).await;
        assert!(
            first.is_err(),
            "a first-seen token was checked on the runtime's thread"
        );
        release.send(()).unwrap();
        blocker.await.unwrap();
        let checked = a.verified(&with, Role::Subscriber).await;
        assert!(matches!(checked, Ok(Some(_))));
        // Seen now: answered at hand even while the blocking pool is busy again.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        let again = now(a.verified(&with, Role::Subscriber)).await;
        assert!(
            matches!(again, Ok(Ok(Some(_)))),
            "a verified token: at hand"
        );
        release.send(()).unwrap();
        blocker.await.unwrap();
    });
}
