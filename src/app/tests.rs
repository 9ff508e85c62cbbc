//! Unit tests of the application: routing, methods, limits, reloads.

use super::*;
use crate::request::PathFrom;
use bytes::Bytes;

fn get(path: &str, method: &str) -> Request {
    let vars = [("REQUEST_METHOD", method), ("REQUEST_URI", path)]
        .iter()
        .map(|(k, v)| (Bytes::from(k.to_string()), Bytes::from(v.to_string())))
        .collect();
    Request::from_vars(vars, Bytes::new(), PathFrom::RequestUri)
}

fn full(r: Response) -> FullResponse {
    match r {
        Response::Full(f) => f,
        Response::Stream(_) => panic!("expected a full response"),
    }
}

#[tokio::test]
async fn routes_methods_and_limit() {
    let mut config = Config::embedded(crate::routes::kinds());
    config.server.max_streams = 2;
    config.routes.retain(|r| r.kind.name() != "topics");
    let app = App::new(config).unwrap();
    assert_eq!(full(app.handle(&get("/nope", "GET")).await).status, 404);
    let r = full(app.handle(&get("/clock", "POST")).await);
    assert_eq!(r.status, 405);
    assert!(r.headers.contains(&("Allow".into(), "GET, HEAD".into())));
    let head = full(app.handle(&get("/clock", "HEAD")).await);
    assert_eq!((head.status, head.body.len()), (200, 0));
    let a = app.handle(&get("/clock", "GET")).await;
    let b = app.handle(&get("/ping", "GET")).await;
    assert!(matches!(a, Response::Stream(_)) && matches!(b, Response::Stream(_)));
    let full503 = full(app.handle(&get("/clock", "GET")).await);
    assert_eq!(full503.status, 503);
    assert!(full503
        .headers
        .iter()
        .any(|(k, v)| k == "Retry-After" && v == "5"));
    drop(a);
    assert!(matches!(
        app.handle(&get("/clock", "GET")).await,
        Response::Stream(_)
    ));
    let status = full(app.handle(&get("/status", "GET")).await);
    let doc: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(doc["active_streams"], 1);
    assert_eq!(doc["rejected_streams"], 1);
    assert_eq!(doc["limits"]["max_streams"], 2);
}

#[tokio::test]
async fn a_kinds_own_figures_are_listed_while_it_has_no_route() {
    let config = Config::parse(
        "[[route]]\npath = \"/status\"\ntype = \"status\"\n\
         [[route]]\npath = \"/metrics\"\ntype = \"metrics\"\n",
        "t.toml",
        crate::routes::kinds(),
    )
    .unwrap();
    let app = App::new(config).unwrap();
    let status = full(app.handle(&get("/status", "GET")).await);
    let doc: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(doc["commands"], serde_json::json!({}));
    let metrics = full(app.handle(&get("/metrics", "GET")).await);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE fastsse_command_running gauge"),
        "{text}"
    );
    assert!(!text.contains("fastsse_command_running{"), "{text}");
}
