//! `[branding]`: the product name, logo and accent colour that the sign-in pages and the mails
//! show. Every value is checked for a shape that stays harmless wherever it is put (HTML, a
//! CSS declaration, a `Content-Security-Policy` source, a mail header); the pages escape it
//! all the same.

use serde::{Deserialize, Serialize};

use super::raw::section;
use super::validate::Validator;

/// Longest product name, in characters.
pub(super) const MAX_NAME_CHARS: usize = 60;
/// Longest logo URL, in bytes.
pub(super) const MAX_LOGO_URL_BYTES: usize = 2048;
/// Text on accent-coloured buttons when white would not contrast enough.
pub(super) const DARK_TEXT: &str = "#1b2240";

section! {
    /// `[branding]`: all empty by default (the pages and mails then say "Gateway").
    RawBranding, BrandingKeys, BrandingView = "branding" {
        name: String = String::new(),
        logo_url: String = String::new(),
        accent_color: String = String::new(),
    }
}

/// The validated `[branding]`; every field `None` when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    /// The product name: page titles and headers, mail subjects, the sender's display name.
    pub name: Option<String>,
    /// Shown above every page (its `alt` is `name`).
    pub logo: Option<Logo>,
    /// Buttons and links.
    pub accent: Option<Accent>,
}

/// Where the logo comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logo {
    /// A path on the gateway's own origin (served by a public route), e.g. `/public/logo.svg`.
    Path(String),
    /// An `https://` URL.
    Url {
        url: String,
        /// `scheme://authority/path` without the query: the `img-src` source allowing exactly
        /// this image.
        source: String,
    },
}

impl Logo {
    /// The value of the `src` attribute.
    pub fn src(&self) -> &str {
        match self {
            Logo::Path(path) => path,
            Logo::Url { url, .. } => url,
        }
    }

    /// The `img-src` source expression that allows this image and nothing else it can.
    pub fn csp_source(&self) -> &str {
        match self {
            Logo::Path(_) => "'self'",
            Logo::Url { source, .. } => source,
        }
    }
}

/// An accent colour and the text colour that reads on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accent {
    /// `#rrggbb` or `#rgb`, lower-case.
    pub color: String,
    /// `#fff` or [`DARK_TEXT`], whichever contrasts more with `color`.
    pub text: &'static str,
}

impl Validator {
    pub(super) fn branding(&mut self, raw: &RawBranding) -> Branding {
        let r = raw.keyed();
        let name = match r.name.value.trim() {
            "" => None,
            name => {
                if name.chars().count() > MAX_NAME_CHARS {
                    self.problem(
                        r.name.key,
                        format!("must be at most {MAX_NAME_CHARS} characters"),
                    );
                }
                if name.chars().any(char::is_control) {
                    self.problem(
                        r.name.key,
                        "must not contain control characters (it is a mail header)",
                    );
                }
                Some(name.to_string())
            }
        };
        let logo = match r.logo_url.value.trim() {
            "" => None,
            url => match logo(url) {
                Ok(logo) => Some(logo),
                Err(message) => {
                    self.problem(r.logo_url.key, message);
                    None
                }
            },
        };
        if logo.is_some() && name.is_none() {
            let name = r.name.key;
            self.problem(
                r.logo_url.key,
                format!("needs {name}, which is the logo's text for those who cannot see it"),
            );
        }
        let accent = match r.accent_color.value.trim() {
            "" => None,
            color => match accent(color) {
                Some(accent) => Some(accent),
                None => {
                    self.problem(
                        r.accent_color.key,
                        format!("`{color}` is not a colour like \"#2450c4\" or \"#24c\""),
                    );
                    None
                }
            },
        };
        Branding { name, logo, accent }
    }
}

/// Checks a logo URL: a path on this origin or an `https://` URL, made only of characters
/// that need no escaping in an attribute, a CSS-free `src` or a CSP source list.
fn logo(url: &str) -> Result<Logo, String> {
    let shape = "must be an https:// URL or a path starting with /, like \"/public/logo.svg\"";
    if url.len() > MAX_LOGO_URL_BYTES {
        return Err(format!("must be at most {MAX_LOGO_URL_BYTES} bytes"));
    }
    let unsafe_char = |c: char| !c.is_ascii_graphic() || "\"'<>\\`^{}|;,".contains(c);
    if url.chars().any(unsafe_char) {
        return Err(format!(
            "{shape}, without spaces, quotes, <, >, \\, ;, , or non-ASCII characters (percent-encode them)"
        ));
    }
    if url.starts_with('/') {
        if url.starts_with("//") {
            return Err(format!("{shape}; // names another host"));
        }
        return url
            .parse::<http::uri::PathAndQuery>()
            .map(|_| Logo::Path(url.to_string()))
            .map_err(|_| shape.to_string());
    }
    let uri: http::Uri = url.parse().map_err(|_| shape.to_string())?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("https"), Some(a)) if !a.host().is_empty() => a,
        _ => return Err(shape.to_string()),
    };
    if authority.as_str().contains('@') {
        return Err(format!("{shape}, without a user name or password"));
    }
    Ok(Logo::Url {
        url: url.to_string(),
        source: format!(
            "https://{}{}",
            authority.as_str().to_ascii_lowercase(),
            uri.path()
        ),
    })
}

/// Parses `#rgb` or `#rrggbb` and picks the text colour with the higher contrast (WCAG).
fn accent(color: &str) -> Option<Accent> {
    let hex = color.strip_prefix('#')?;
    if !matches!(hex.len(), 3 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |i: usize| -> f64 {
        let v = if hex.len() == 3 {
            let d = u8::from_str_radix(&hex[i..=i], 16).unwrap_or(0);
            d * 17
        } else {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0)
        };
        let c = f64::from(v) / 255.0;
        if c <= 0.040_45 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
    // Contrast with white is 1.05 / (L + 0.05); with DARK_TEXT (L ≈ 0.017) (L + 0.05) / 0.067.
    let on_white = 1.05 / (luminance + 0.05);
    let on_dark = (luminance + 0.05) / 0.067;
    Some(Accent {
        color: color.to_ascii_lowercase(),
        text: if on_white >= on_dark {
            "#fff"
        } else {
            DARK_TEXT
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawBranding) -> Result<Branding, Vec<String>> {
        let mut v = Validator::default();
        let b = v.branding(&raw);
        if v.problems.is_empty() {
            Ok(b)
        } else {
            Err(v.problems.into_iter().map(|p| p.key).collect())
        }
    }

    fn raw(name: &str, logo_url: &str, accent_color: &str) -> RawBranding {
        RawBranding {
            name: name.into(),
            logo_url: logo_url.into(),
            accent_color: accent_color.into(),
        }
    }

    #[test]
    fn unset_is_unbranded() {
        assert_eq!(check(raw("", "", "")), Ok(Branding::default()));
        assert_eq!(check(raw("  ", " ", "")), Ok(Branding::default()));
    }

    #[test]
    fn names_are_bounded_and_free_of_control_characters() {
        let b = check(raw(" Acme Cloud ", "", "")).unwrap();
        assert_eq!(b.name.as_deref(), Some("Acme Cloud"));
        assert!(check(raw("Ünïcødé, \"Inc.\" <ok>", "", "")).is_ok());
        for bad in ["Acme\r\nBcc: x@evil.example", "tab\there", "nul\0"] {
            assert_eq!(check(raw(bad, "", "")), Err(vec!["branding.name".into()]));
        }
        assert!(check(raw(&"x".repeat(MAX_NAME_CHARS), "", "")).is_ok());
        assert!(check(raw(&"x".repeat(MAX_NAME_CHARS + 1), "", "")).is_err());
    }

    #[test]
    fn logos_are_https_urls_or_paths_of_a_safe_shape() {
        let b = check(raw("Acme", "/public/logo.svg?v=2", "")).unwrap();
        assert_eq!(b.logo, Some(Logo::Path("/public/logo.svg?v=2".into())));
        assert_eq!(b.logo.as_ref().unwrap().csp_source(), "'self'");
        let b = check(raw("Acme", "https://CDN.Example.com/a/logo.png?v=3", "")).unwrap();
        let logo = b.logo.unwrap();
        assert_eq!(logo.src(), "https://CDN.Example.com/a/logo.png?v=3");
        assert_eq!(logo.csp_source(), "https://cdn.example.com/a/logo.png");
        for bad in [
            "http://cdn.example.com/logo.png",
            "javascript:alert(1)",
            "data:image/svg+xml,<svg onload=alert(1)>",
            "//evil.example/logo.png",
            "https://user:pw@cdn.example.com/logo.png",
            "https:///logo.png",
            "/logo.png\" onerror=\"alert(1)",
            "/logo.png'",
            "/a b.png",
            "/a;b.png",
            "/a,b.png",
            "/a\\b.png",
            "/é.png",
            "logo.png",
            "ftp://cdn.example.com/logo.png",
        ] {
            assert_eq!(
                check(raw("Acme", bad, "")),
                Err(vec!["branding.logo_url".into()]),
                "{bad}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_LOGO_URL_BYTES));
        assert!(check(raw("Acme", &long, "")).is_err());
    }

    #[test]
    fn a_logo_needs_a_name_for_its_alt_text() {
        assert_eq!(
            check(raw("", "/logo.svg", "")),
            Err(vec!["branding.logo_url".into()])
        );
    }

    #[test]
    fn accents_are_hex_colours_with_readable_text() {
        let b = check(raw("", "", "#2450C4")).unwrap();
        assert_eq!(
            b.accent,
            Some(Accent {
                color: "#2450c4".into(),
                text: "#fff"
            })
        );
        assert_eq!(
            accent("#ff0").unwrap().text,
            DARK_TEXT,
            "yellow needs dark text"
        );
        assert_eq!(accent("#000").unwrap().text, "#fff");
        assert_eq!(accent("#ffffff").unwrap().text, DARK_TEXT);
        for bad in [
            "red",
            "#12345",
            "#1234",
            "#12345678",
            "#ggg",
            "2450c4",
            "#fff;background:url(x)",
            "#fff}body{display:none",
            "rgb(0,0,0)",
            "var(--x)",
        ] {
            assert_eq!(
                check(raw("", "", bad)),
                Err(vec!["branding.accent_color".into()]),
                "{bad}"
            );
        }
    }
}
