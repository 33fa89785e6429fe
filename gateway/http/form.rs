//! Form bodies (`application/x-www-form-urlencoded`, at most [`MAX_FORM_BYTES`]), as the
//! pages post them.

use http::{HeaderMap, Request, header};

use crate::body::Incoming;
use crate::error::HttpError;

/// Largest form body read.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// Whether the request body is an HTML form (`application/x-www-form-urlencoded`).
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A decoded form: its fields in order.
#[derive(Debug, Default)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Decodes `application/x-www-form-urlencoded` bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Form {
            fields: form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of a field, if present.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a field, or `""`.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.field(name).unwrap_or_default()
    }
}

/// Reads a form body.
///
/// # Errors
/// 413 over 16 KiB, 400 when the body cannot be read.
pub(crate) async fn read(req: Request<Incoming>) -> Result<Form, HttpError> {
    let bytes = super::read_body(req.into_body(), MAX_FORM_BYTES).await?;
    Ok(Form::parse(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn form_content_type_is_recognized() {
        let mut h = HeaderMap::new();
        assert!(!is_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        assert!(is_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(!is_form(&h));
    }

    #[test]
    fn forms_decode_plus_and_percent() {
        let f = Form::parse(
            b"email=a%2Bb%40x.com&password=p+w%26d&return_to=%2Fapp%3Fx%3D1&email=second",
        );
        assert_eq!(f.get("email"), "a+b@x.com");
        assert_eq!(f.get("password"), "p w&d");
        assert_eq!(f.get("return_to"), "/app?x=1");
        assert_eq!(f.field("missing"), None);
        assert_eq!(f.get("missing"), "");
    }
}
