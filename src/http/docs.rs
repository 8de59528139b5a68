//! `GET /docs` (spec §2; `DOCS=off`: 404): Swagger UI on our `/openapi.json`, from the binary
//! (build.rs gzipped it), under a strict content security policy, with ETags and caching.

use hyper::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, ETAG, HeaderMap,
    HeaderValue, IF_NONE_MATCH, VARY,
};
use hyper::{Response, StatusCode};
use std::sync::LazyLock;

use super::error::ApiError;
use super::response::{self, Body};

/// No inline script, and nothing fetched from anywhere but this server.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// A file of the page: its name under `/docs`, its type, whether it is gzipped, and its bytes.
type Asset = (&'static str, &'static str, bool, &'static [u8]);

/// A file build.rs gzipped, as an [`Asset`].
macro_rules! gzipped {
    ($name:literal, $type:literal) => {
        ($name, $type, true, include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz")))
    };
}

const ASSETS: [Asset; 5] = [
    ("", "text/html; charset=utf-8", false, include_bytes!("docs/index.html")),
    ("init.js", "text/javascript; charset=utf-8", false, include_bytes!("docs/init.js")),
    gzipped!("swagger-ui.css", "text/css; charset=utf-8"),
    gzipped!("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    gzipped!("LICENSE", "text/plain; charset=utf-8"),
];

/// `GET /docs` (`file` empty) or `GET /docs/{file}`: 304 when `If-None-Match` names the file's
/// ETag; a gzipped file only to a client that takes gzip (as every browser does).
pub fn serve(file: &str, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let at = ASSETS.iter().position(|(name, ..)| *name == file).ok_or(ApiError::NotFound)?;
    let ((_, content_type, gzipped, bytes), etag) = (ASSETS[at], ETAGS[at].clone());
    let mut response = match headers.get(IF_NONE_MATCH) == Some(&etag) {
        true => response::empty(StatusCode::NOT_MODIFIED),
        false if gzipped && !takes_gzip(headers) => return Err(ApiError::NotAcceptable),
        false => response::text(StatusCode::OK, content_type, bytes),
    };
    let set = response.headers_mut();
    set.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    set.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    set.insert(ETAG, etag);
    if gzipped {
        set.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        set.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    Ok(response)
}

/// Whether the client takes gzip: listed (or `*`) without `q=0`, or no `Accept-Encoding` at all.
fn takes_gzip(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    codings.peek().is_none()
        || codings.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !parts.any(|p| p == "q=0")
        })
}

/// Each file's ETag: its FNV-1a hash, which changes when the file does; made once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    let fnv = |bytes: &[u8]| {
        let step = |hash: u64, byte: &u8| (hash ^ *byte as u64).wrapping_mul(0x0100_0000_01b3);
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, step)
    };
    let etag = |(.., bytes): &Asset| HeaderValue::try_from(format!("\"{:x}\"", fnv(bytes)));
    ASSETS.iter().map(|asset| etag(asset).expect("hex digits")).collect()
});
