//! Driving the web console like a browser: sign in by a one-time link (made
//! in the store the way `backchannel user login-link` makes one), keep the
//! session cookie, read the CSRF token off a page, fetch pages and post
//! forms. Redirects are not followed, so a test sees each 303.

use backchannel::conversations::sign_in;
use backchannel::model::now_ms;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use super::TestServer;

/// A signed-in browser.
pub struct Session {
    pub client: reqwest::Client,
    pub base: String,
    /// `bc_session=<value>`.
    pub cookie: String,
    pub csrf: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of the first `<input … name="csrf" value="…">` of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let end = html[at..].find('"').expect("end of the csrf value");
    html[at..at + end].to_string()
}

/// The `name=value` of a `Set-Cookie` named `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Signs the user with `email` in through a fresh sign-in link.
pub async fn sign_in(s: &TestServer, email: &str) -> Session {
    let email = email.to_string();
    let token = s
        .store
        .write(move |db| {
            let user = backchannel::store::users::by_email(db, &email)?;
            let token = sign_in::new_token();
            let now = now_ms();
            backchannel::store::console::create_link(
                db,
                &sign_in::hash(&token),
                user.id,
                now,
                now + 600_000,
            )?;
            Ok(token)
        })
        .await
        .expect("a sign-in link");
    let base = format!("http://{}", s.http);
    let client = client();
    let page = client
        .get(format!("{base}/app/login/{token}"))
        .send()
        .await
        .expect("link page");
    assert_eq!(page.status(), StatusCode::OK, "the link page");
    let pre = set_cookie(&page, "bc_pre").expect("the bc_pre cookie");
    let csrf = csrf_of(&page.text().await.expect("page"));
    let used = client
        .post(format!("{base}/app/login/{token}"))
        .header(COOKIE, &pre)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("use the link");
    assert_eq!(used.status(), StatusCode::SEE_OTHER, "signed in");
    let cookie = set_cookie(&used, "bc_session").expect("the session cookie");
    let mut session = Session {
        client,
        base,
        cookie,
        csrf: String::new(),
    };
    let (status, body) = session.get("/app/me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    session.csrf = csrf_of(&body);
    session
}

impl Session {
    /// GET a console path: the status and the body (a redirect's body is
    /// empty; see [`Session::get_full`] for its location).
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.get_full(path).await;
        (status, body)
    }

    /// GET: status, `Location` (or ""), body.
    pub async fn get_full(&self, path: &str) -> (StatusCode, String, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        Self::read(resp).await
    }

    /// POSTs a url-encoded form (the session's CSRF token is not added:
    /// pass `("csrf", &session.csrf)`); status, `Location` (or ""), body.
    pub async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String, String) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .expect("POST");
        Self::read(resp).await
    }

    async fn read(resp: reqwest::Response) -> (StatusCode, String, String) {
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, location, resp.text().await.expect("body"))
    }
}
