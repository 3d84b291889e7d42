//! The OpenAPI document is true to the router: it lists exactly the
//! operations the router serves, and every one of them is routed.

mod common;

use std::collections::BTreeSet;

use backchannel::api::{OPENAPI, ROUTES};
use common::TestServer;

fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let docs = documented();
    let missing: Vec<_> = routes.difference(&docs).collect();
    let extra: Vec<_> = docs.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes not in openapi.json (run tools/openapi.py): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi.json documents operations the router lacks: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_route_is_served() {
    let mut s = TestServer::start_with("", "").await;
    let client = reqwest::Client::new();
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{external_id}", "T-1")
            .replace("{id}", "1")
            .replace("{n}", "0");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = client
            .request(m, format!("http://{}{concrete}", s.http))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let body = resp.text().await.expect("body");
        assert_ne!(status, 405, "{method} {path} is not routed");
        assert!(
            !body.contains("route not found"),
            "{method} {path} is not routed"
        );
    }
    let resp = client
        .get(format!("http://{}/api/openapi.json", s.http))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.expect("text"), OPENAPI);
    let resp = client
        .delete(format!("http://{}/api/me", s.http))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 405);
    let v: serde_json::Value = resp.json().await.expect("json 405");
    assert_eq!(v["error"]["code"], "method_not_allowed");
    s.shutdown().await;
}
