//! Who a front-door caller is, and what ClickHouse lets that caller do.
//!
//! Owns: reading credentials from wherever ClickHouse reads them; checking
//! them (`auth = "users"`: serve's own list, compared in time that depends
//! only on what the caller sent; `auth = "clickhouse"`: the server is
//! asked, as that user); and, with `auth = "clickhouse"`, the server's own
//! answer to "may this user INSERT into this table", asked with an empty
//! INSERT as the user, so readonly profiles, database and table access,
//! row policies and quotas are ClickHouse's and never a copy of its rules.
//! Answers are remembered for `credentials_ttl`; while no replica can be
//! asked, a remembered yes stays good for `credentials_outage_ttl`.
//! Must not: log or echo a password, remember a refusal (a revoked user
//! must not be served from memory, a restored one must not wait), or take
//! an unreachable server for a refusal.

use super::params::{param, Params};
use crate::serve::config::{FrontDoorAuth, FrontDoorUser};
use crate::serve::http::same_secret;
use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use ch_ingest_protocol::{ChError, Code};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one question to ClickHouse may take before the next replica
/// is asked.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// The question a login asks: it checks the password and reads the
/// profile's readonly level at once (sent with POST: over GET ClickHouse
/// itself raises the level to 2).
const READONLY_LEVEL: &str = "SELECT value FROM system.settings WHERE name = 'readonly'";
/// The most remembered answers; past it the oldest half is forgotten (each
/// is one user and table, so only a flood of distinct credentials gets
/// here, and it costs them a question, not us memory).
const REMEMBERED: usize = 100_000;

/// A client's credentials, from wherever ClickHouse reads them: a user
/// and password, or a JWT (`Authorization: Bearer`, as ClickHouse Cloud
/// takes it), and the quota key (`X-ClickHouse-Quota`).
pub(super) struct Credentials {
    pub user: String,
    password: String,
    /// A bearer token, sent on as it came; the server checks it.
    jwt: Option<String>,
    quota: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("jwt", &self.jwt.as_ref().map(|_| "(redacted)"))
            .finish_non_exhaustive()
    }
}

/// The credentials of a request: `X-ClickHouse-User`/`-Key`, else
/// `Authorization: Basic` or `Bearer`, else the `user`/`password` URL
/// parameters, else ClickHouse's `default` with no password.
pub(super) fn credentials(headers: &HeaderMap, params: &Params) -> Result<Credentials, ChError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let quota = text("X-ClickHouse-Quota")
        .or_else(|| param(params, "quota_key"))
        .map(str::to_string);
    let with = |user: &str, password: &str, jwt: Option<&str>| Credentials {
        user: user.to_string(),
        password: password.to_string(),
        jwt: jwt.map(str::to_string),
        quota: quota.clone(),
    };
    if let Some(user) = text("X-ClickHouse-User") {
        return Ok(with(user, text("X-ClickHouse-Key").unwrap_or(""), None));
    }
    if let Some(auth) = text("authorization") {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(with("(token)", "", Some(rest.trim())));
        }
        let basic = scheme
            .eq_ignore_ascii_case("basic")
            .then(|| base64(rest.trim()))
            .flatten()
            .and_then(|raw| String::from_utf8(raw).ok());
        let Some(pair) = basic else {
            return Err(ChError::new(
                Code::UnknownUser,
                "the Authorization header is neither Basic user:password nor Bearer",
            ));
        };
        let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
        return Ok(with(user, password, None));
    }
    Ok(with(
        param(params, "user").unwrap_or("default"),
        param(params, "password").unwrap_or(""),
        None,
    ))
}

/// The table token a front-door request carries (`X-CH-Ingest-Token`; an
/// `Authorization: Bearer` there is a ClickHouse credential).
pub(super) fn table_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("X-CH-Ingest-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Standard base64 (RFC 4648), padding optional.
fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// What ClickHouse said about a caller.
#[derive(Debug, Clone, Copy)]
pub(super) struct Identity {
    /// The caller's `readonly` level as its profile sets it (0: may
    /// write), so a forwarded read is made read-only without tripping a
    /// profile that already is. 0 when serve does not ask ClickHouse.
    pub readonly: u8,
}

/// A verified caller: with `auth = "users"`, the tables it may use.
pub(super) struct Caller {
    pub credentials: Credentials,
    pub identity: Identity,
    /// `None`: every allowed table.
    pub tables: Option<Vec<String>>,
}

/// The front door's gatekeeper (see the module doc).
pub(super) struct Gate {
    pub mode: FrontDoorAuth,
    users: Vec<FrontDoorUser>,
    ttl: Duration,
    outage_ttl: Duration,
    client: Client<ch_ingest::sink::TlsConnector, Full<Bytes>>,
    /// Every server that may be asked, the first first.
    urls: Vec<String>,
    digest: std::collections::hash_map::RandomState,
    /// (credentials digest, question) -> when ClickHouse last said yes,
    /// and the readonly level it gave.
    said_yes: Mutex<HashMap<(u64, String), (Instant, u8)>>,
}

/// The answer to one question, from the first replica that could answer.
enum Answer {
    Yes(String),
    No(ChError),
    /// No replica could be asked (down, timed out, or failing with a
    /// transient code): why, from the last one tried.
    Unreachable(String),
}

impl Gate {
    pub fn new(
        mode: FrontDoorAuth,
        users: Vec<FrontDoorUser>,
        ttl: Duration,
        outage_ttl: Duration,
        client: Client<ch_ingest::sink::TlsConnector, Full<Bytes>>,
        urls: Vec<String>,
    ) -> Self {
        Gate {
            mode,
            users,
            ttl,
            outage_ttl,
            client,
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            digest: Default::default(),
            said_yes: Mutex::default(),
        }
    }

    /// Who the caller is: checked before its body is read.
    pub async fn login(&self, headers: &HeaderMap, params: &Params) -> Result<Caller, ChError> {
        let credentials = credentials(headers, params)?;
        let mut caller = Caller {
            credentials,
            identity: Identity { readonly: 0 },
            tables: None,
        };
        match self.mode {
            FrontDoorAuth::None => Ok(caller),
            FrontDoorAuth::Users => {
                // Every user is compared, so timing tells neither which
                // name exists nor a prefix of a password.
                let who = &caller.credentials;
                let mut found = None;
                for u in &self.users {
                    let same = same_secret(u.name.as_bytes(), who.user.as_bytes());
                    let matches = same_secret(u.password.as_bytes(), who.password.as_bytes());
                    if same && matches {
                        found = Some(u);
                    }
                }
                match found {
                    Some(u) => {
                        caller.tables = u.tables.clone();
                        Ok(caller)
                    }
                    None => Err(ChError::new(
                        Code::WrongPassword,
                        format!(
                            "{}: Authentication failed: password is incorrect or there is no user with such name",
                            who.user
                        ),
                    )),
                }
            }
            FrontDoorAuth::ClickHouse => {
                // One question both checks the password and reads the
                // profile's readonly level (POST: a GET would read 2).
                let level = self.verified(&caller.credentials, READONLY_LEVEL).await?;
                caller.identity.readonly = level;
                Ok(caller)
            }
        }
    }

    /// The caller's `readonly` level as its ClickHouse profile sets it,
    /// asked as that user (remembered like a login).
    pub async fn readonly_level(&self, caller: &Caller) -> Result<u8, ChError> {
        if self.mode == FrontDoorAuth::ClickHouse {
            return Ok(caller.identity.readonly);
        }
        self.verified(&caller.credentials, READONLY_LEVEL).await
    }

    /// Whether ClickHouse lets the caller INSERT into `table` (quoted SQL
    /// name), asked with an empty INSERT as that user: nothing is stored,
    /// and every check the server makes on an INSERT is made.
    pub async fn may_insert(&self, caller: &Caller, table: &str) -> Result<(), ChError> {
        if self.mode != FrontDoorAuth::ClickHouse {
            return Ok(());
        }
        let question = format!("INSERT INTO {table} FORMAT RowBinary");
        self.verified(&caller.credentials, &question)
            .await
            .map(drop)
    }

    /// ClickHouse's yes to `question` as `who`, remembered for `ttl`, and
    /// for `outage_ttl` while no replica can be asked. The readonly level
    /// in the answer's first line (0 when it is not a number).
    async fn verified(&self, who: &Credentials, question: &str) -> Result<u8, ChError> {
        let key = (
            self.digest
                .hash_one((&who.user, &who.password, &who.jwt, &who.quota)),
            question.to_string(),
        );
        let remembered = self.remembered(&key);
        if let Some((at, level)) = remembered {
            if at.elapsed() < self.ttl {
                return Ok(level);
            }
        }
        match self.ask(who, question).await {
            Answer::Yes(body) => {
                let level = body.trim().parse().unwrap_or(0);
                let mut said = self.said_yes.lock().unwrap_or_else(|p| p.into_inner());
                if said.len() >= REMEMBERED {
                    let outage_ttl = self.outage_ttl;
                    said.retain(|_, (at, _)| at.elapsed() < outage_ttl);
                    if said.len() >= REMEMBERED {
                        said.clear();
                    }
                }
                said.insert(key, (Instant::now(), level));
                Ok(level)
            }
            Answer::No(e) => {
                self.said_yes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                Err(e)
            }
            Answer::Unreachable(why) => match remembered {
                Some((at, level)) if at.elapsed() < self.outage_ttl => {
                    tracing::warn!(
                        user = %who.user,
                        "ClickHouse cannot be asked ({why}); trusting its answer from {:?} ago \
                         (credentials_outage_ttl)",
                        at.elapsed()
                    );
                    Ok(level)
                }
                _ => Err(ChError::new(
                    Code::TooManySimultaneousQueries,
                    format!(
                        "no ClickHouse server could be asked to check the credentials ({why}); \
                         try again"
                    ),
                )),
            },
        }
    }

    fn remembered(&self, key: &(u64, String)) -> Option<(Instant, u8)> {
        self.said_yes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    async fn ask(&self, who: &Credentials, question: &str) -> Answer {
        let mut why = String::from("no ClickHouse URL is configured");
        for url in &self.urls {
            let uri = format!(
                "{url}/?query={}",
                crate::http_load::percent_encode(question)
            );
            let mut request = hyper::Request::post(uri).header(header::CONTENT_LENGTH, 0);
            request = match &who.jwt {
                Some(jwt) => request.header(header::AUTHORIZATION, format!("Bearer {jwt}")),
                None => request
                    .header("X-ClickHouse-User", &who.user)
                    .header("X-ClickHouse-Key", &who.password),
            };
            if let Some(quota) = &who.quota {
                request = request.header("X-ClickHouse-Quota", quota);
            }
            let request = request.body(Full::new(Bytes::new()));
            let Ok(request) = request else {
                return Answer::No(ChError::new(
                    Code::UnknownUser,
                    "the user name or password is not valid in a header",
                ));
            };
            let asked = tokio::time::timeout(ASK_TIMEOUT, async {
                let response = self.client.request(request).await?;
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body()).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body.to_bytes()))
            });
            let (status, body) = match asked.await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    why = format!("{url}: {e}");
                    continue;
                }
                Err(_) => {
                    why = format!("{url}: no answer within {ASK_TIMEOUT:?}");
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            if status.is_success() {
                return Answer::Yes(text);
            }
            let code = ChError::code_in(&text);
            let transient = ch_ingest::sink::SinkError::Server {
                code,
                message: String::new(),
            }
            .is_retryable();
            if transient || code.is_none() {
                why = format!("{url}: HTTP {status}, code {}", code.unwrap_or(0));
                continue;
            }
            let mut e = ChError::from_server(code, &text);
            e.status = status.as_u16();
            return Answer::No(e);
        }
        Answer::Unreachable(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn credentials_from_every_place_clickhouse_reads_them() {
        let mut h = HeaderMap::new();
        let p: Params = vec![("user".into(), "u".into()), ("password".into(), "p".into())];
        let c = credentials(&h, &p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p"));
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic YWxpY2U6czNjcjN0"),
        );
        let c = credentials(&h, &p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3cr3t"));
        h.insert("X-ClickHouse-User", HeaderValue::from_static("bob"));
        h.insert("X-ClickHouse-Key", HeaderValue::from_static("k"));
        let c = credentials(&h, &p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("bob", "k"));
        let c = credentials(&HeaderMap::new(), &Vec::new()).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("default", ""));
        let mut bad = HeaderMap::new();
        bad.insert("authorization", HeaderValue::from_static("Basic !!!"));
        assert!(credentials(&bad, &Vec::new()).is_err());
        // A bearer token is a ClickHouse credential (a JWT), redacted.
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", HeaderValue::from_static("Bearer eyJ.tok"));
        bearer.insert("X-ClickHouse-Quota", HeaderValue::from_static("team-a"));
        let c = credentials(&bearer, &p).unwrap();
        assert_eq!(c.jwt.as_deref(), Some("eyJ.tok"));
        assert_eq!(c.quota.as_deref(), Some("team-a"));
        assert_eq!(table_token(&bearer), None);
        assert!(!format!("{c:?}").contains("eyJ"), "{c:?}");
        bearer.insert("X-CH-Ingest-Token", HeaderValue::from_static("t"));
        assert_eq!(table_token(&bearer), Some("t"));
    }
}
