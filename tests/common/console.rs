//! Driving the web console like a browser: sign in by a one-time link,
//! keep the cookies, fetch pages, post forms.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use super::TestServer;

/// A signed-in browser: its session cookie and the forms' CSRF token.
pub struct Session {
    pub client: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

/// The `value` of the first `name="csrf"` field of a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// `name=value` of a `Set-Cookie` named `name`.
fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// Signs `email` (an existing user) in through a sign-in link, as
/// `backchannel user login-link` makes one.
pub async fn sign_in(s: &TestServer, email: &str) -> Session {
    let (config, e) = (s.conversations.config.clone(), email.to_string());
    let url = s
        .store
        .write(move |c| {
            let user = backchannel::store::users::by_email(c, &e)?;
            backchannel::conversations::sign_in::create_link(
                c,
                &config,
                &user,
                backchannel::model::now_ms(),
            )
        })
        .await
        .expect("sign-in link");
    let token = url.rsplit('/').next().expect("token").to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("http://{}", s.http);
    let page = client
        .get(format!("{base}/app/login/{token}"))
        .send()
        .await
        .expect("link page");
    assert_eq!(page.status(), StatusCode::OK);
    let pre = cookie_of(&page, "bc_pre").expect("pre-sign-in cookie");
    let html = page.text().await.expect("link page text");
    let csrf = csrf_of(&html).expect("csrf on the link page");
    let used = client
        .post(format!("{base}/app/login/{token}"))
        .header(COOKIE, &pre)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("use link");
    assert_eq!(used.status(), StatusCode::SEE_OTHER);
    let cookie = cookie_of(&used, "bc_session").expect("session cookie");
    let mut session = Session {
        client,
        base,
        cookie,
        csrf: String::new(),
    };
    let (status, me) = session.get("/app/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    session.csrf = csrf_of(&me).expect("csrf on a signed-in page");
    session
}

impl Session {
    /// GET with the session: the status and the body.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.get_response(path).await;
        let status = r.status();
        (status, r.text().await.expect("page text"))
    }

    /// GET: status, `Location` (or ""), body.
    pub async fn get_full(&self, path: &str) -> (StatusCode, String, String) {
        let (status, location, body) = Self::answer(self.get_response(path).await).await;
        (status, location.unwrap_or_default(), body)
    }

    /// GET with the session: the whole response (headers of downloads).
    pub async fn get_response(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET")
    }

    /// POSTs url-encoded `fields` as given (a test adds `csrf` itself):
    /// the status, the redirect's `Location` and the body.
    pub async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(fields)
            .send()
            .await
            .expect("POST");
        Self::answer(r).await
    }

    /// [`Session::post_form`] with the `Location` as a string ("" when
    /// there is none).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String, String) {
        let (status, location, body) = self.post_form(path, fields).await;
        (status, location.unwrap_or_default(), body)
    }

    /// POSTs a multipart form (files).
    pub async fn post_multipart(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> (StatusCode, Option<String>, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .multipart(form)
            .send()
            .await
            .expect("POST");
        Self::answer(r).await
    }

    async fn answer(r: reqwest::Response) -> (StatusCode, Option<String>, String) {
        let status = r.status();
        let location = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, location, r.text().await.expect("body"))
    }
}
