//! The registry calls that are neither pull nor push: `POST /auth` (`docker login`, which
//! asks the registry whether it accepts the credentials) and `GET /images/search` (`docker
//! search`: Docker Hub's search API for Docker Hub, and for any other registry its search API
//! if it has one, else its `/v2/_catalog` filtered by the term).

use berth_distribution::{Client, ClientOptions, DistributionError};
use http::StatusCode;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::images::{client_options, registry_auth};
use super::server::{self, Reply, Req};
use super::Api;

/// Docker Hub's name in references.
const HUB: &str = "docker.io";
/// Where Docker Hub's search API is.
const HUB_INDEX: &str = "index.docker.io";

/// A registry's answer, as Docker answers it: 401 for refused credentials, 404 for what is
/// not there, 500 otherwise (an unreachable registry included, as dockerd).
fn registry_error(e: DistributionError) -> ApiError {
    let status = match &e {
        DistributionError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        DistributionError::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// The registry of a `docker login` server address: `https://index.docker.io/v1/` (the CLI's
/// default) is Docker Hub; otherwise the host of `[scheme://]host[:port][/path]`.
fn login_registry(server: &str) -> Result<String, ApiError> {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("");
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    if !host_ok {
        return Err(ApiError::bad_request(format!(
            "invalid registry address {server:?}: expected [https://]host[:port]"
        )));
    }
    Ok(match host {
        "" | HUB | HUB_INDEX | "registry-1.docker.io" => HUB.to_string(),
        h => h.to_string(),
    })
}

/// The fields of `POST /auth`'s `AuthConfig`.
const AUTH_FIELDS: &[&str] = &[
    "username",
    "password",
    "auth",
    "email",
    "serveraddress",
    "identitytoken",
    "registrytoken",
];

/// `POST /auth`: checks the credentials against the registry (`GET /v2/` with them, through
/// its token service if it has one). berthd keeps nothing: the CLI stores what it logged in
/// with in its config.json and sends it with each pull and push.
pub async fn login(api: &Api, req: Req) -> Reply {
    let a: Value = req.json().await?;
    let Some(fields) = a.as_object() else {
        return Err(ApiError::bad_request(
            "the body of /auth must be a JSON object",
        ));
    };
    if let Some(k) = fields.keys().find(|k| !AUTH_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} in /auth"
        )));
    }
    let field = |k: &str| a[k].as_str().unwrap_or("");
    let server = match field("serveraddress") {
        "" => HUB,
        s => s,
    };
    let registry = login_registry(server)?;
    let creds = super::images::auth_config_credentials(&a)?
        .ok_or_else(|| ApiError::bad_request("docker login needs a username and a password"))?;
    let opts = client_options(api, &registry, Some(creds));
    let reg = registry.clone();
    tokio::task::spawn_blocking(move || Client::for_registry(&reg, opts)?.check_login())
        .await
        .map_err(|e| ApiError::internal(format!("login: {e}")))?
        .map_err(registry_error)?;
    tracing::info!(registry, "credentials accepted");
    Ok(server::json(
        StatusCode::OK,
        &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// One search result in Docker's shape.
fn result(name: &str, description: &str, stars: u64, official: bool, automated: bool) -> Value {
    json!({
        "name": name,
        "description": description,
        "star_count": stars,
        "is_official": official,
        "is_automated": automated,
    })
}

/// What `docker search TERM` asks: the registry named by the term's first component (when it
/// looks like a host, as in references), else Docker Hub; and the words to look for.
fn split_term(term: &str) -> (String, String) {
    match term.split_once('/') {
        Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (h.to_string(), rest.to_string())
        }
        _ => (HUB.to_string(), term.to_string()),
    }
}

/// The search itself, blocking: the v1 search API, falling back to the catalog where the
/// registry answers 404 to it (a registry v2, as Debian's docker-registry).
fn search_registry(
    registry: &str,
    words: &str,
    limit: usize,
    opts: ClientOptions,
) -> Result<Vec<Value>, DistributionError> {
    let mut v1 = opts.clone();
    if registry == HUB {
        v1.endpoint = Some(HUB_INDEX.to_string());
    }
    match Client::for_registry(registry, v1)?.v1_search(words, limit)? {
        Some(found) => Ok(found
            .into_iter()
            .map(|r| {
                result(
                    &r.name,
                    &r.description,
                    r.star_count,
                    r.is_official,
                    r.is_automated,
                )
            })
            .collect()),
        None => {
            // Catalog pages are cheap; read more than asked, the filter keeps few.
            let names = Client::for_registry(registry, opts)?.catalog(10_000)?;
            let w = words.to_ascii_lowercase();
            let mut found: Vec<Value> = names
                .iter()
                .filter(|n| n.to_ascii_lowercase().contains(&w))
                .map(|n| result(&format!("{registry}/{n}"), "", 0, false, false))
                .collect();
            found.truncate(limit);
            Ok(found)
        }
    }
}

/// `GET /images/search?term=&limit=&filters=`.
pub async fn search(api: &Api, req: Req) -> Reply {
    let term = req
        .q("term")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("term is required"))?
        .to_string();
    let limit = match req.q("limit").filter(|l| !l.is_empty()) {
        None => 25,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}: not a number")))?,
    };
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "Limit {limit} is outside the range of [1, 100]"
        )));
    }
    let filters = req.filters()?;
    filters.only(&["is-automated", "is-official", "stars"])?;
    let automated = filters.bool("is-automated")?;
    let official = filters.bool("is-official")?;
    let mut min_stars = 0u64;
    for s in filters.get("stars") {
        let n = s
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid filter 'stars={s}'")))?;
        min_stars = min_stars.max(n);
    }
    let (registry, words) = split_term(&term);
    if words.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid search term {term:?}: nothing to search for after the registry"
        )));
    }
    let opts = client_options(api, &registry, registry_auth(&req)?);
    let found = tokio::task::spawn_blocking(move || {
        search_registry(&registry, &words, limit as usize, opts)
    })
    .await
    .map_err(|e| ApiError::internal(format!("search: {e}")))?
    .map_err(registry_error)?;
    let kept: Vec<Value> = found
        .into_iter()
        .filter(|r| {
            automated.is_none_or(|a| r["is_automated"] == a)
                && official.is_none_or(|o| r["is_official"] == o)
                && r["star_count"].as_u64().unwrap_or(0) >= min_stars
        })
        .collect();
    Ok(server::json(StatusCode::OK, &kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_addresses_name_their_registry() {
        assert_eq!(login_registry("https://index.docker.io/v1/").unwrap(), HUB);
        assert_eq!(login_registry("docker.io").unwrap(), HUB);
        assert_eq!(login_registry("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            login_registry("http://reg.example:443/v2/").unwrap(),
            "reg.example:443"
        );
        assert!(login_registry("https:///x").is_err());
        assert!(login_registry("a b").is_err());
    }

    #[test]
    fn search_terms_name_a_registry_as_references_do() {
        assert_eq!(split_term("busybox"), (HUB.into(), "busybox".into()));
        assert_eq!(split_term("user/app"), (HUB.into(), "user/app".into()));
        assert_eq!(
            split_term("127.0.0.1:5000/busy"),
            ("127.0.0.1:5000".into(), "busy".into())
        );
        assert_eq!(
            split_term("localhost/a/b"),
            ("localhost".into(), "a/b".into())
        );
    }
}
