//! The JSON document that describes a request: method, path, query, headers (lower-case names;
//! repeated names joined with ", "; non-UTF-8 bytes replaced by U+FFFD) and the number of body
//! bytes received. Written straight into one pre-sized buffer.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// Room for the keys, punctuation and `body_bytes` of the document.
const FIXED_SIZE: usize = 96;
/// Room per header for quotes, colon, comma and a little escaping.
const PER_HEADER: usize = 8;

#[derive(Serialize)]
struct Description<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: Headers<'a>,
    body_bytes: u64,
}

struct Headers<'a>(&'a HeaderMap);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self.0.get_all(name).iter();
            let first = values.next().map_or(Cow::Borrowed(""), text);
            match values.next() {
                None => map.serialize_entry(name.as_str(), &first)?,
                Some(second) => {
                    let mut joined = first.into_owned();
                    for value in std::iter::once(second).chain(values) {
                        joined.push_str(", ");
                        joined.push_str(&text(value));
                    }
                    map.serialize_entry(name.as_str(), &joined)?;
                }
            }
        }
        map.end()
    }
}

fn text(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// Serializes the description of a request that carried `body_bytes` bytes of body.
///
/// # Errors
/// Only if serde_json fails, which writing these types into memory does not do.
pub(super) fn describe(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_bytes: u64,
) -> serde_json::Result<Bytes> {
    let capacity = FIXED_SIZE
        + method.as_str().len()
        + uri.path().len()
        + uri.query().map_or(0, str::len)
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + PER_HEADER)
            .sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(
        &mut out,
        &Description {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers: Headers(headers),
            body_bytes,
        },
    )?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parsed(method: &Method, uri: &str, headers: &HeaderMap, body_bytes: u64) -> Value {
        let uri: Uri = uri.parse().unwrap();
        serde_json::from_slice(&describe(method, &uri, headers, body_bytes).unwrap()).unwrap()
    }

    #[test]
    fn describes_method_path_query_and_body_size() {
        let doc = parsed(&Method::POST, "/a/b?x=1&y=%20", &HeaderMap::new(), 42);
        assert_eq!(
            doc,
            json!({"method": "POST", "path": "/a/b", "query": "x=1&y=%20", "headers": {}, "body_bytes": 42})
        );
    }

    #[test]
    fn query_is_null_when_absent() {
        let doc = parsed(&Method::GET, "/", &HeaderMap::new(), 0);
        assert_eq!(doc["query"], Value::Null);
    }

    #[test]
    fn joins_repeated_headers_and_replaces_invalid_utf8() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.append("x-multi", HeaderValue::from_static("c"));
        headers.append("x-bytes", HeaderValue::from_bytes(b"ok\xffok").unwrap());
        headers.append(
            "x-utf8",
            HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        );
        headers.append("x-quote", HeaderValue::from_static(r#"say "hi"\"#));
        let doc = parsed(&Method::GET, "/", &headers, 0);
        assert_eq!(
            doc["headers"],
            json!({"x-multi": "a, b, c", "x-bytes": "ok\u{fffd}ok", "x-utf8": "café", "x-quote": r#"say "hi"\"#})
        );
    }
}
