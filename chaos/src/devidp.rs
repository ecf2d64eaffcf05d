//! A development OpenID provider, **for local use only**: it knows a fixed set of demo users with
//! one shared password, keeps everything in memory, and serves plain HTTP on loopback. It exists
//! so that `palisade-chaos up` works on a machine with nothing else installed. It implements the
//! parts of OpenID Connect the edge uses (discovery, JWKS, the authorization code flow with PKCE,
//! the token endpoint with `client_secret_basic`, userinfo) and signs ID tokens with ES256.
//! The end-to-end tests use the certified `oidc-provider` from npm instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The one password every demo user has.
pub const PASSWORD: &str = "palisade";

/// A demo user.
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// Login name and subject.
    pub login: &'static str,
    /// Email.
    pub email: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Groups.
    pub groups: &'static [&'static str],
}

/// The demo users.
pub const USERS: &[DemoUser] = &[
    DemoUser {
        login: "alice",
        email: "alice@example.com",
        name: "Alice Admin",
        groups: &["engineering", "admins"],
    },
    DemoUser {
        login: "bob",
        email: "bob@example.com",
        name: "Bob Builder",
        groups: &["engineering"],
    },
    DemoUser {
        login: "carol",
        email: "carol@partner.example",
        name: "Carol Contractor",
        groups: &["partners"],
    },
];

struct PendingCode {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    challenge: String,
    /// The signed-in user's claims.
    user: Value,
    expires: Instant,
}

struct State {
    issuer: String,
    client_id: String,
    client_secret: String,
    key: EncodingKey,
    jwk: Jwk,
    codes: Mutex<HashMap<String, PendingCode>>,
    tokens: Mutex<HashMap<String, (Value, Instant)>>,
}

/// A running development provider.
#[derive(Debug)]
pub struct DevIdp {
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    /// The client id the edges use.
    pub client_id: String,
    /// The client secret (put into the catalog as a secret).
    pub client_secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random() -> String {
    let mut b = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    URL_SAFE_NO_PAD.encode(b)
}

impl DevIdp {
    /// Starts on `addr` (port 0 for any). Redirect URIs are accepted when they are
    /// `https://<name>.localhost[:port]/.palisade/callback` or on `localhost`/`127.0.0.1`.
    pub async fn start(addr: SocketAddr, client_id: &str) -> anyhow::Result<DevIdp> {
        Self::serve(addr, client_id, None).await
    }

    /// Starts with HTTPS on `addr`, with a certificate for its IP address from `ca` (edges in
    /// network namespaces reach it by address, and issuers other than `localhost` must be
    /// https).
    pub async fn start_tls(
        addr: SocketAddr,
        client_id: &str,
        ca: &palisade_link::pki::DevCa,
    ) -> anyhow::Result<DevIdp> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let pair = ca.issue_server(&[addr.ip().to_string()])?;
        let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::serve(
            addr,
            client_id,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
        .await
    }

    async fn serve(
        addr: SocketAddr,
        client_id: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<DevIdp> {
        let listener = TcpListener::bind(addr).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = format!("{scheme}://{}", listener.local_addr()?);
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        jwk.common.key_id = Some("dev-1".into());
        let client_secret = random();
        let state = Arc::new(State {
            issuer: issuer.clone(),
            client_id: client_id.into(),
            client_secret: client_secret.clone(),
            key,
            jwk,
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(Ok(s)) =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                    .await
                            {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        Ok(DevIdp {
            issuer,
            client_id: client_id.into(),
            client_secret,
            task,
        })
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn json_resp(status: StatusCode, v: Value) -> Resp {
    respond(status, "application/json", v.to_string())
}

fn oauth_error(status: StatusCode, code: &str) -> Resp {
    json_resp(status, json!({"error": code}))
}

fn params(s: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

fn redirect_ok(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    let host = u.host_str().unwrap_or("");
    u.scheme() == "https"
        && u.path() == "/.palisade/callback"
        && u.query().is_none()
        && (host == "localhost" || host == "127.0.0.1" || host.ends_with(".localhost"))
}

async fn handle(s: &State, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => json_resp(
            StatusCode::OK,
            json!({
                "issuer": s.issuer,
                "authorization_endpoint": format!("{}/authorize", s.issuer),
                "token_endpoint": format!("{}/token", s.issuer),
                "jwks_uri": format!("{}/jwks", s.issuer),
                "userinfo_endpoint": format!("{}/userinfo", s.issuer),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "scopes_supported": ["openid", "email", "profile", "groups"],
            }),
        ),
        (Method::GET, "/jwks") => json_resp(StatusCode::OK, json!({"keys": [s.jwk]})),
        (Method::GET, "/authorize") => authorize_form(s, &params(&query), None),
        (Method::POST, "/authorize") => {
            let body = read_form(req).await;
            authorize_submit(s, &body)
        }
        (Method::POST, "/token") => {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = read_form(req).await;
            token(s, auth.as_deref(), &body)
        }
        (Method::GET, "/userinfo") => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
            match tokens.get(bearer) {
                Some((u, exp)) if *exp > Instant::now() => json_resp(StatusCode::OK, u.clone()),
                _ => oauth_error(StatusCode::UNAUTHORIZED, "invalid_token"),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

async fn read_form(req: Request<Incoming>) -> HashMap<String, String> {
    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    params(&String::from_utf8_lossy(&body))
}

fn claims(u: &DemoUser) -> Value {
    json!({"sub": u.login, "email": u.email, "email_verified": true, "name": u.name, "groups": u.groups})
}

/// The claims of a user who may sign in: a demo user, or a numbered load-test user `load-N`
/// (`load-N@example.com`, group `engineering`) for benchmarks that need many distinct users.
fn find_user(login: &str) -> Option<Value> {
    if let Some(u) = USERS.iter().find(|u| u.login == login) {
        return Some(claims(u));
    }
    let n = login.strip_prefix("load-")?;
    (!n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit())).then(|| {
        json!({"sub": login, "email": format!("{login}@example.com"), "email_verified": true,
               "name": format!("Load user {n}"), "groups": ["engineering"]})
    })
}

fn esc(s: &str) -> String {
    palisade_node::pages::escape(s)
}

fn authorize_form(s: &State, p: &HashMap<String, String>, error: Option<&str>) -> Resp {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != s.client_id || !redirect_ok(get("redirect_uri")) {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "unknown client or redirect_uri\n",
        );
    }
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || !get("scope").split(' ').any(|x| x == "openid")
    {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "this provider needs response_type=code, scope openid and PKCE (S256)\n",
        );
    }
    let hidden: String = [
        "client_id",
        "redirect_uri",
        "state",
        "nonce",
        "code_challenge",
    ]
    .iter()
    .map(|k| format!("<input type=hidden name={k} value=\"{}\">", esc(get(k))))
    .collect();
    let users: String = USERS
        .iter()
        .map(|u| {
            format!(
                "<option value={l}>{l} — {n} ({g})</option>",
                l = u.login,
                n = esc(u.name),
                g = u.groups.join(", ")
            )
        })
        .collect();
    let err = error
        .map(|e| format!("<p style=color:#b42318>{}</p>", esc(e)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Development sign-in</title>\
<style>body{{font-family:system-ui,sans-serif;background:#fff7e6;margin:0}}main{{max-width:30rem;margin:8vh auto;background:#fff;padding:2rem;border-radius:10px;box-shadow:0 2px 12px #0002}}\
.warn{{background:#b42318;color:#fff;padding:.5rem .8rem;border-radius:6px;font-weight:600}}label{{display:block;margin:.8rem 0 .3rem}}select,input[type=password]{{width:100%;padding:.5rem;font-size:1rem}}button{{margin-top:1rem;background:#2f5bea;color:#fff;border:0;border-radius:6px;padding:.6rem 1rem;font-size:1rem}}</style></head>\
<body><main><p class=warn>Development identity provider — for local use only. Never use it in production.</p>\
<h1>Sign in</h1>{err}<form method=post action=/authorize>{hidden}\
<label for=login>User</label><select id=login name=login>{users}</select>\
<label for=password>Password (every demo user: <code>{PASSWORD}</code>)</label><input id=password type=password name=password>\
<button type=submit>Sign in</button></form></main></body></html>"
    );
    respond(StatusCode::OK, "text/html; charset=utf-8", html)
}

fn authorize_submit(s: &State, p: &HashMap<String, String>) -> Resp {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != s.client_id || !redirect_ok(get("redirect_uri")) {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "unknown client or redirect_uri\n",
        );
    }
    let Some(user) = find_user(get("login")) else {
        return authorize_form(s, p, Some("unknown user"));
    };
    if get("password") != PASSWORD {
        return authorize_form(s, p, Some("wrong password"));
    }
    let code = random();
    s.codes.lock().unwrap_or_else(|p| p.into_inner()).insert(
        code.clone(),
        PendingCode {
            client_id: get("client_id").into(),
            redirect_uri: get("redirect_uri").into(),
            nonce: get("nonce").into(),
            challenge: get("code_challenge").into(),
            user,
            expires: Instant::now() + Duration::from_secs(60),
        },
    );
    let mut to = match url::Url::parse(get("redirect_uri")) {
        Ok(u) => u,
        Err(_) => return respond(StatusCode::BAD_REQUEST, "text/plain", "bad redirect_uri\n"),
    };
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", get("state"))
        .append_pair("iss", &s.issuer);
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = to.as_str().parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn token(s: &State, auth: Option<&str>, p: &HashMap<String, String>) -> Resp {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let creds = auth
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|c| {
            let (id, secret) = c.split_once(':')?;
            let dec = |x: &str| {
                url::form_urlencoded::parse(format!("x={x}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((dec(id)?, dec(secret)?))
        });
    match creds {
        Some((id, secret)) if id == s.client_id && secret == s.client_secret => {}
        _ => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
    if get("grant_type") != "authorization_code" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let Some(c) = s
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(get("code"))
    else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        get("code_verifier").as_bytes(),
    ));
    if c.expires < Instant::now()
        || c.client_id != s.client_id
        || c.redirect_uri != get("redirect_uri")
        || c.challenge != challenge
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut id = c.user.clone();
    id["iss"] = json!(s.issuer);
    id["aud"] = json!(s.client_id);
    id["iat"] = json!(now);
    id["exp"] = json!(now + 300);
    id["nonce"] = json!(c.nonce);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("dev-1".into());
    let Ok(id_token) = jsonwebtoken::encode(&h, &id, &s.key) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let access = random();
    s.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(
        access.clone(),
        (c.user.clone(), Instant::now() + Duration::from_secs(300)),
    );
    json_resp(
        StatusCode::OK,
        json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}),
    )
}

/// Signs `user` in through this development provider at an edge serving `host` on `port` (the
/// way a browser would: edge redirect, login form, callback); returns the session cookie value.
/// `http` must not follow redirects and must trust the edge and resolve `host`.
pub async fn sign_in(
    http: &reqwest::Client,
    host: &str,
    port: u16,
    user: &str,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let r = http.get(format!("https://{host}:{port}/")).send().await?;
    let login = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no login cookie")?
        .to_string();
    let auth = url::Url::parse(
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("no redirect to the provider")?,
    )?;
    let mut form: Vec<(String, String)> = auth.query_pairs().into_owned().collect();
    form.push(("login".into(), user.into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = http
        .post(format!(
            "{}://{}/authorize",
            auth.scheme(),
            auth.authority()
        ))
        .form(&form)
        .send()
        .await?;
    let cb = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("the provider did not redirect back")?
        .to_string();
    let r = http.get(cb).header("cookie", login).send().await?;
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-palisade-session="))
        .and_then(|v| v.split(';').next())
        .map(String::from)
        .context("no session cookie after sign-in")
}
