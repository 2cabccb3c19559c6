//! API versions, `/_ping` and `/version`: how the docker CLI negotiates (it reads `API-Version`
//! from the ping and then prefixes every path with `/v1.NN`, the lower of its own and ours).

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{Method, StatusCode};
use serde_json::json;

use super::server::{full, json, Reply, Req};
use super::Api;

/// An API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

/// The version served (Docker 20.10's).
pub const CURRENT: ApiVersion = ApiVersion(1, 41);
/// [`CURRENT`] as text.
pub const CURRENT_STR: &str = "1.41";
/// The oldest version accepted (dockerd 20.10's minimum).
pub const MIN: ApiVersion = ApiVersion(1, 12);
/// [`MIN`] as text.
pub const MIN_STR: &str = "1.12";

impl ApiVersion {
    /// `1.41` → (1, 41); anything else → None.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        if a.is_empty() || b.is_empty() || !(a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit())
        {
            return None;
        }
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// `GET|HEAD /_ping`: "OK", with the headers the client negotiates from.
pub async fn ping(req: Req) -> Reply {
    let body = if req.method == Method::HEAD { "" } else { "OK" };
    let mut r = http::Response::new(full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    // No BuildKit and no classic builder behind it: "1" keeps the CLI off BuildKit's session.
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    if req.method == Method::HEAD {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    Ok(r)
}

/// Go's GOARCH for the host (what Docker reports as `Arch`).
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `GET /version`.
pub async fn version(_api: &Api, _req: Req) -> Reply {
    let v = crate::daemon::services::version::VERSION;
    let kernel = kernel_version();
    Ok(json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "Berth"},
            "Components": [{
                "Name": "Engine",
                "Version": v,
                "Details": {
                    "ApiVersion": CURRENT_STR,
                    "MinAPIVersion": MIN_STR,
                    "Os": "linux",
                    "Arch": goarch(),
                    "KernelVersion": kernel,
                    "GitCommit": "",
                    "GoVersion": "",
                    "BuildTime": "",
                    "Experimental": "false",
                },
            }],
            "Version": v,
            "ApiVersion": CURRENT_STR,
            "MinAPIVersion": MIN_STR,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": goarch(),
            "KernelVersion": kernel,
            "BuildTime": "",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(ApiVersion::parse("1.41"), Some(CURRENT));
        assert_eq!(ApiVersion::parse(MIN_STR), Some(MIN));
        assert_eq!(CURRENT.to_string(), CURRENT_STR);
        assert!(ApiVersion::parse("1.9").unwrap() < ApiVersion::parse("1.12").unwrap());
        assert_eq!(ApiVersion::parse("latest"), None);
        assert_eq!(ApiVersion::parse("1."), None);
        assert_eq!(ApiVersion::parse("olumes"), None);
    }
}
